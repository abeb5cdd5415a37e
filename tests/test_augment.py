"""The augment building blocks: documents and chunking, the mix, dedup, generation, the
quality filter's decision and the resumable runner (fake model, no network)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from realign import tokens
from realign.augment import dedup, documents, generate, quality_filter, rephrase
from realign.criteria import load_pack
from realign.llm.base import BackendError, ChatRequest
from realign.llm.engine import BudgetExceeded, Engine
from realign.llm.fake import FakeBackend
from realign.pipeline import runner
from realign.pipeline.state import RunState
from realign.records import Failure, Record, Turn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# ---------------------------------------------------------------- documents


def words(text: str) -> list[str]:
    return text.split()


def test_chunks_fit_keep_order_and_paragraphs_and_do_not_overlap() -> None:
    paras = [" ".join(f"para{p}word{i}." for i in range(40)) for p in range(12)]
    text = "\n\n".join(paras)
    chunks = documents.chunk_text(text, max_tokens=120)
    assert len(chunks) > 3
    assert all(tokens.count(c) <= 120 for c in chunks)
    # Every word exactly once, in order: no overlap, nothing lost.
    assert [w for c in chunks for w in words(c)] == words(text)
    # Paragraphs that fit stay whole, with their break kept between them.
    assert any("\n\n" in c for c in chunks) or all(tokens.count(p) > 60 for p in paras)
    assert all(not c.startswith(" ") and not c.endswith(" ") for c in chunks)


def test_long_paragraph_split_by_sentence_then_by_tokens() -> None:
    sentences = [f"Sentence number {i} says something short." for i in range(60)]
    endless = "word " * 700  # one "sentence" far over the limit
    text = " ".join(sentences) + "\n\n" + endless
    chunks = documents.chunk_text(text, max_tokens=100)
    assert all(tokens.count(c) <= 100 for c in chunks)
    joined = " ".join(chunks)
    assert all(s in joined for s in sentences)
    assert joined.count("word") == 700


def test_short_text_is_one_chunk_and_tiny_limit_is_refused() -> None:
    assert documents.chunk_text("Just one line.") == ["Just one line."]
    with pytest.raises(ValueError, match="at least 16"):
        documents.chunk_text("x", max_tokens=4)


def test_read_documents_jsonl_names_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "docs.jsonl"
    rows = [
        {"id": "a", "title": "A", "text": "Alpha text."},
        {"id": "b", "body_text": "no text field"},
        {"id": "c", "text": 42},
        {"id": "d", "text": "   "},
        {"text": "No id here."},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")
    out = list(documents.read_documents(p))
    assert [type(o).__name__ for o in out] == [
        "Document", "DocumentError", "DocumentError", "DocumentError", "Document",
        "DocumentError",
    ]  # fmt: skip
    assert out[0].title == "A" and out[0].id == "a"
    assert out[4].id == "4"  # no id: the position
    b, c, d = out[1], out[2], out[3]
    assert f"{p}:2" in str(b) and "text" in str(b) and "--text-field" in str(b)
    assert b.record == rows[1]
    assert c.field == "text" and "got int" in str(c)
    assert "empty" in str(d)
    assert f"{p}:6" in str(out[5])


def test_read_documents_text_field_and_folder(tmp_path: Path) -> None:
    p = tmp_path / "docs.jsonl"
    p.write_text(json.dumps({"id": 1, "article": "Body."}) + "\n", encoding="utf-8")
    (doc,) = documents.read_documents(p, text_field="article")
    assert isinstance(doc, documents.Document) and doc.text == "Body." and doc.id == "1"
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.md").write_text("Bee.", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("Ay.", encoding="utf-8")
    (folder / "skip.json").write_text("{}", encoding="utf-8")
    got = list(documents.read_documents(folder))
    assert [(d.id, d.index) for d in got] == [("b.md", 0), ("sub/a.txt", 1)]
    with pytest.raises(documents.DocumentsError, match="no such file"):
        list(documents.read_documents(tmp_path / "missing"))


def test_example_docs_chunk_under_300_tokens() -> None:
    chunks = list(documents.iter_chunks(documents.read_documents(EXAMPLES / "docs")))
    assert chunks and all(isinstance(c, documents.Chunk) and c.tokens <= 300 for c in chunks)
    # tides.md is long enough for two chunks: the link back is (doc_id, chunk).
    assert [c.chunk for c in chunks if c.doc_id == "tides.md"] == [0, 1]


# ---------------------------------------------------------------- rephrase and mix


def test_parse_ratio() -> None:
    assert rephrase.parse_ratio("1:1") == (1, 1)
    assert rephrase.parse_ratio("2:3") == (2, 3)
    for bad in ("1", "0:1", "a:b", "1:1:1", "-1:2"):
        with pytest.raises(ValueError, match="REAL:SYNTHETIC"):
            rephrase.parse_ratio(bad)


def lines(prefix: str, n: int) -> list[dict[str, object]]:
    return [{"id": f"{prefix}{i}"} for i in range(n)]


@pytest.mark.parametrize(
    ("n_real", "n_syn", "ratio"), [(4, 8, (1, 1)), (5, 2, (1, 2)), (3, 3, (2, 1))]
)
def test_mix_holds_the_ratio_and_uses_everything(
    n_real: int, n_syn: int, ratio: tuple[int, int]
) -> None:
    real, syn = lines("r", n_real), lines("s", n_syn)
    out = list(rephrase.mix(lambda: iter(real), lambda: iter(syn), (n_real, n_syn), ratio))
    ids = [str(x["id"]) for x in out]
    assert {i for i in ids if i.startswith("r")} == {str(x["id"]) for x in real}
    assert {i for i in ids if i.startswith("s")} == {str(x["id"]) for x in syn}
    n_r = sum(i.startswith("r") for i in ids)
    n_s = len(ids) - n_r
    assert n_r * ratio[1] == n_s * ratio[0]
    # Blocks: ratio[0] real then ratio[1] synthetic.
    block = ["r"] * ratio[0] + ["s"] * ratio[1]
    assert [i[0] for i in ids[: len(block)]] == block
    # Copies beyond the first say so.
    firsts = [x for x in out if "repeat" not in x]
    assert len(firsts) == n_real + n_syn


def test_mix_with_one_side_empty_is_the_other_side_once() -> None:
    out = list(rephrase.mix(lambda: iter(lines("r", 3)), lambda: iter([]), (3, 0), (1, 1)))
    assert [x["id"] for x in out] == ["r0", "r1", "r2"]


def test_rephrase_request_uses_the_style_body_as_instruction() -> None:
    pack = load_pack("wrap")
    chunk = documents.Chunk(doc_id="d", doc_index=0, chunk=0, text="Cats sleep a lot.", tokens=5)
    req = rephrase.build_request(chunk, pack["qa"])
    user = req.messages[-1].content
    assert "Question:" in user and "Cats sleep a lot." in user and "Style: qa" in user
    assert req.max_tokens == rephrase.output_budget(5)


def test_rephrase_links_output_to_document_and_chunk() -> None:
    pack = load_pack("wrap")
    chunk = documents.Chunk(doc_id="d7", doc_index=3, chunk=2, text="Cats sleep a lot.", tokens=5)
    item = rephrase.RephraseItem(
        index=0, id=rephrase.item_id(chunk, "easy"), chunk=chunk, style="easy"
    )
    backend = FakeBackend(lambda r: json.dumps({"text": "  Cats nap.  "}))
    out = asyncio.run(rephrase.rephrase(Engine(backend), item, pack["easy"]))
    assert (out.id, out.doc_id, out.chunk, out.style) == ("d7:2:easy", "d7", 2, "easy")
    assert out.text == "Cats nap." and out.source_text == "Cats sleep a lot."


def test_rephrase_rejects_empty_text_after_reasks() -> None:
    pack = load_pack("wrap")
    chunk = documents.Chunk(doc_id="d", doc_index=0, chunk=0, text="x y z", tokens=3)
    item = rephrase.RephraseItem(index=0, id="d:0:easy", chunk=chunk, style="easy")
    backend = FakeBackend(lambda r: json.dumps({"text": ""}))
    with pytest.raises(Exception, match="RephraseOutput"):
        asyncio.run(rephrase.rephrase(Engine(backend), item, pack["easy"]))
    assert len(backend.calls) == 3  # the first answer and two re-asks


# ---------------------------------------------------------------- dedup


def test_near_duplicates_found_and_distinct_kept() -> None:
    nd = dedup.NearDuplicates(0.8)
    assert nd.check("a", "How long does a full cycle of the Moon's phases take?") is None
    hit = nd.check("b", "how long does a full cycle of the moons phases take")
    assert hit is not None and hit[0] == "a" and hit[1] >= 0.8
    assert nd.check("c", "Why does Earth's shadow not cause the Moon's phases?") is None
    assert nd.check("d", "HOW LONG does a full cycle of the Moon's phases take??") is not None
    assert len(nd) == 2


def test_near_duplicates_threshold_one_means_same_words() -> None:
    nd = dedup.NearDuplicates(1.0)
    assert nd.check("a", "What is binary search used for today?") is None
    assert nd.check("b", "What is binary search used for now?") is None
    assert nd.check("c", "what is BINARY search used for today") == ("a", 1.0)
    with pytest.raises(ValueError):
        dedup.NearDuplicates(0.0)


def test_shingles_are_deterministic_and_jaccard_is_exact() -> None:
    a = dedup.shingles("one two three four")
    assert a == dedup.shingles("One, two; three four!")
    assert len(a) == 2
    b = dedup.shingles("one two three five")
    assert dedup.jaccard(a, b) == pytest.approx(1 / 3)
    assert dedup.shingles("") == frozenset()


# ---------------------------------------------------------------- generate


def chunk() -> documents.Chunk:
    return documents.Chunk(
        doc_id="moon", doc_index=0, chunk=1, text="The synodic month is 29.5 days.", tokens=9
    )


def test_typed_schema_lists_pack_names_but_unknown_becomes_default() -> None:
    pack = load_pack("realign")
    schema = generate.pairs_schema(tuple(pack.names())).model_json_schema()
    typed = next(iter(schema["$defs"].values()))
    assert typed["properties"]["task_type"]["enum"] == pack.names()
    assert generate.pairs_schema(tuple(pack.names())) is generate.pairs_schema(tuple(pack.names()))
    assert generate.resolve_type("open_qa", pack) == ("open_qa", "")
    name, note = generate.resolve_type("trivia", pack)
    assert name == "default" and "trivia" in note


def test_generate_truncates_to_n_and_types_pairs() -> None:
    pack = load_pack("realign")
    pairs = [
        {"instruction": "How long is a synodic month?", "response": "About 29.5 days.", "task_type": "open_qa"},
        {"instruction": " Name it. ", "response": "The synodic month.", "task_type": "moon_facts"},
        {"instruction": "Third?", "response": "Extra.", "task_type": "open_qa"},
    ]  # fmt: skip
    backend = FakeBackend(lambda r: json.dumps({"pairs": pairs}))
    item = generate.GenerateItem(index=0, id="moon:1", chunk=chunk())
    out = asyncio.run(generate.generate(Engine(backend), item, 2, pack))
    assert out.asked == 2 and len(out.pairs) == 2
    assert out.pairs[0].task_type == "open_qa"
    assert out.pairs[1].instruction == "Name it."  # stripped
    assert out.pairs[1].task_type == "default" and "moon_facts" in out.pairs[1].task_note
    req = backend.calls[0]
    assert req.stage == "generate" and "29.5 days" in req.messages[-1].content
    assert "open_qa:" in req.messages[-1].content  # the type list is in the prompt


def test_generate_untyped_has_no_task_type_field() -> None:
    backend = FakeBackend()
    item = generate.GenerateItem(index=0, id="moon:1", chunk=chunk())
    out = asyncio.run(generate.generate(Engine(backend), item, 1, None))
    assert out.pairs[0].task_type is None
    assert "task_type" not in json.dumps(backend.calls[0].json_schema)


def test_to_record_puts_type_in_category_and_source_in_meta() -> None:
    gen = generate.GeneratedChunk(
        id="moon:1", doc_id="moon", chunk=1, asked=1,
        pairs=[generate.GeneratedPair(instruction="Q?", response="A.", task_type="open_qa")],
    )  # fmt: skip
    prov = generate.provenance("m", "fake", None)
    rec = generate.to_record(gen, 0, 5, "sharegpt", prov)
    assert rec.id == "moon:1:0" and rec.index == 5
    assert rec.turns[0].extra == {"category": "open_qa"}
    dump = rec.meta.model_dump()
    assert dump["generated"] == {"doc_id": "moon", "chunk": 1, "pair": 0}


def test_deduplicated_keeps_the_first_of_a_group() -> None:
    def gc(cid: str, qs: list[str]) -> generate.GeneratedChunk:
        return generate.GeneratedChunk(
            id=cid, doc_id=cid, chunk=0, asked=len(qs),
            pairs=[generate.GeneratedPair(instruction=q, response="r") for q in qs],
        )  # fmt: skip

    chunks = [
        gc("a", ["What causes the tides on Earth?", "What are neap tides?"]),
        gc("b", ["what causes the tides on earth", "Why is the Bay of Fundy tide so large?"]),
    ]
    out = list(generate.deduplicated(chunks, 0.8))
    dups = [d for _, _, d in out if d is not None]
    assert len(out) == 4 and len(dups) == 1
    assert dups[0].id == "b:0:0" and dups[0].duplicate_of == "a:0:0"


# ---------------------------------------------------------------- quality filter


def qa(rid: str, turns: list[tuple[str, str]], category: str | None = None) -> Record:
    ts: list[Turn] = []
    for q, a in turns:
        ts.append(Turn(role="user", content=q, extra={"category": category} if category else {}))
        ts.append(Turn(role="assistant", content=a))
    return Record(id=rid, index=0, turns=ts, source_format="items")


def score_by_response(request: ChatRequest) -> str:
    """Scores 9 for responses that explain ('because'), 3 otherwise."""
    user = request.messages[-1].content
    response = user.split("<response>")[1].split("</response>")[0]
    score = 9 if "because" in response else 3
    return json.dumps({"rationale": f"score {score}", "score": score})


def test_filter_keeps_only_when_every_turn_passes() -> None:
    eng = Engine(FakeBackend(score_by_response))
    good = qa("g", [("Why is the sky blue?", "Blue because air scatters short waves more.")])
    mixed = qa("m", [("Why?", "It is, because of X."), ("And?", "Yes.")], category="open_qa")
    out_g = asyncio.run(quality_filter.score_record(eng, good, ["educational_value"], 7))
    out_m = asyncio.run(quality_filter.score_record(eng, mixed, ["educational_value"], 7))
    assert out_g.verdict.kept and out_g.record.meta.scores["educational_value"].score == 9
    assert not out_m.verdict.kept and out_m.task_type == "open_qa"
    assert out_m.record.meta.scores["educational_value"].score == 3  # the lowest turn
    assert "turn 3" in out_m.verdict.reason
    meta = out_m.record.meta.model_dump()
    assert meta["quality_filter"]["kept"] is False
    assert len(meta["quality_filter"]["units"]) == 2  # per-turn scores for multi-turn records
    # The educational_value rubric reached the judge.
    sent = eng.backend.calls[0].messages[-1].content  # type: ignore[attr-defined]
    assert "Textbooks" in sent and "Aspect: educational_value" in sent


def test_filter_decide_without_turns_drops_with_reason() -> None:
    v = quality_filter.decide([], ["readability"], 5)
    assert not v.kept and "no assistant turn" in v.reason


def test_filter_several_aspects_all_must_pass() -> None:
    units = [
        quality_filter.UnitScore(turn=1, aspect="readability", score=8, rationale=""),
        quality_filter.UnitScore(turn=1, aspect="factuality", score=5, rationale="wrong date"),
    ]
    v = quality_filter.decide(units, ["readability", "factuality"], 6)
    assert not v.kept and v.lowest == {"readability": 8, "factuality": 5}
    assert "factuality 5 < 6" in v.reason and "wrong date" in v.reason
    assert quality_filter.decide(units, ["readability", "factuality"], 5).kept


# ---------------------------------------------------------------- runner


class Item(BaseModel):
    index: int
    id: str


def test_runner_commits_failures_resumes_and_stops(tmp_path: Path) -> None:
    calls: list[int] = []

    async def work(item: Item) -> BaseModel:
        calls.append(item.index)
        if item.index == 2:
            raise BackendError("boom")
        return Item(index=item.index * 10, id=item.id)

    items: list[Item | Failure] = [Item(index=i, id=f"x{i}") for i in range(4)]
    items.append(Failure(id="bad", index=4, stage="load", error="unreadable"))
    state = RunState(tmp_path / "s.sqlite", "fp")
    counts = asyncio.run(
        runner.process_items(
            items, state, work, stage="t", window=2, record_of=lambda i: {"i": i.id}
        )
    )
    assert (counts.read, counts.ok, counts.failed) == (5, 3, 2)
    assert [json.loads(p)["index"] for p in state.iter_payloads(ok=True)] == [0, 10, 30]
    fails = [Failure.model_validate_json(p) for p in state.iter_payloads(ok=False)]
    assert [(f.index, f.stage) for f in fails] == [(2, "t"), (4, "load")]
    assert fails[0].record == {"i": "x2"} and "boom" in fails[0].error
    state.close()

    # Rerun: successes come from the state, failures are retried.
    state = RunState(tmp_path / "s.sqlite", "fp")
    calls.clear()
    counts = asyncio.run(
        runner.process_items(items, state, work, stage="t", window=2, record_of=lambda i: {})
    )
    assert calls == [2] and counts.resumed == 3
    state.close()

    async def over_budget(item: Item) -> BaseModel:
        raise BudgetExceeded("--max-cost reached")

    state = RunState(tmp_path / "s2.sqlite", "fp")
    with pytest.raises(runner.RunStopped, match="max-cost"):
        asyncio.run(
            runner.process_items(items[:2], state, over_budget, stage="t", window=1, record_of=dict)
        )
    assert state.count() == 0
    state.close()


def test_fingerprint_changes_with_input_and_settings(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text("{}\n", encoding="utf-8")
    a = runner.fingerprint("rephrase", p, {"styles": ["easy"]})
    assert a == runner.fingerprint("rephrase", p, {"styles": ["easy"]})
    assert a != runner.fingerprint("rephrase", p, {"styles": ["qa"]})
    assert a != runner.fingerprint("generate", p, {"styles": ["easy"]})
    p.write_text('{"x": 1}\n', encoding="utf-8")
    assert a != runner.fingerprint("rephrase", p, {"styles": ["easy"]})


def test_educational_value_is_a_judge_aspect_with_a_rubric() -> None:
    from realign import judge

    assert "educational_value" in judge.available_aspects()
    text = judge.rubric(
        "educational_value", pointwise=True, task_type=None, pack=None, reference=None
    )
    assert "student" in text and "Scale:" in text
    assert "Scale:" not in judge.rubric(
        "educational_value", pointwise=False, task_type=None, pack=None, reference=None
    )
