"""`realign rephrase | generate | filter` end to end with the fake model (no network): outputs,
links to the source, the mix, dedup, kept/dropped files, failures, resume, dry runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from realign.cli.main import app
from realign.io.read import read_records
from realign.llm.base import BackendError, ChatRequest
from realign.llm.engine import BudgetExceeded
from realign.llm.fake import FakeBackend
from realign.records import Record

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DOCS = [
    {"id": "moon", "title": "Moon", "text": "The Moon has phases.\n\nA cycle takes 29.5 days."},
    {"id": "tides", "text": "Tides rise and fall twice a day because of the Moon."},
]


def docs_file(tmp_path: Path, rows: list[dict[str, Any]] = DOCS) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def use_backend(
    monkeypatch: pytest.MonkeyPatch, responder: Callable[[ChatRequest], Any]
) -> FakeBackend:
    backend = FakeBackend(responder)
    monkeypatch.setattr("realign.llm.build.make_backend", lambda opts, stderr=None: backend)
    return backend


def invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def style_of(request: ChatRequest) -> str:
    return request.messages[-1].content.split("Style: ", 1)[1].split("\n", 1)[0]


def rephraser(request: ChatRequest) -> str:
    text = request.messages[-1].content.split("<text>\n", 1)[1].split("\n</text>", 1)[0]
    return json.dumps({"text": f"[{style_of(request)}] {text}"})


# ---------------------------------------------------------------- rephrase


def test_rephrase_writes_one_line_per_chunk_and_style(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = use_backend(monkeypatch, rephraser)
    out = tmp_path / "wrap.jsonl"
    res = invoke("rephrase", docs_file(tmp_path), "-o", out, "--styles", "easy,qa")
    assert res.exit_code == 0, res.output
    got = read_jsonl(out)
    assert [g["id"] for g in got] == ["moon:0:easy", "moon:0:qa", "tides:0:easy", "tides:0:qa"]
    first = got[0]
    assert (first["doc_id"], first["chunk"], first["style"], first["synthetic"]) == (
        "moon", 0, "easy", True,
    )  # fmt: skip
    assert first["source_text"] == DOCS[0]["text"]
    assert first["text"] == "[easy] " + DOCS[0]["text"]
    assert len(backend.calls) == 4 and {c.stage for c in backend.calls} == {"rephrase"}
    assert "easy 2, qa 2" in flat(res.output)
    assert not (tmp_path / "wrap.failures.jsonl").exists()
    assert not list(tmp_path.glob(".*realign-state*"))  # the run state is cleaned up


def test_rephrase_mix_interleaves_real_and_synthetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_backend(monkeypatch, rephraser)
    out = tmp_path / "mix.jsonl"
    res = invoke(
        "rephrase", docs_file(tmp_path), "-o", out, "--styles", "medium", "--mix", "1:1",
        "--no-source-text",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    got = read_jsonl(out)
    assert [(g["id"], g["synthetic"]) for g in got] == [
        ("moon:0:original", False), ("moon:0:medium", True),
        ("tides:0:original", False), ("tides:0:medium", True),
    ]  # fmt: skip
    assert got[0]["text"] == DOCS[0]["text"] and "source_text" not in got[1]


def test_rephrase_chunks_long_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_backend(monkeypatch, rephraser)
    long = "\n\n".join(f"Paragraph {i} " + "has words. " * 30 for i in range(10))
    out = tmp_path / "wrap.jsonl"
    res = invoke(
        "rephrase", docs_file(tmp_path, [{"id": "long", "text": long}]), "-o", out,
        "--styles", "easy", "--max-chunk-tokens", "100",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    got = read_jsonl(out)
    assert len(got) > 3 and [g["chunk"] for g in got] == list(range(len(got)))


def test_rephrase_failure_is_reported_and_rerun_retries_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def qa_fails(request: ChatRequest) -> str:
        if style_of(request) == "qa" and "Tides" in request.messages[-1].content:
            raise BackendError("HTTP 400: context too long", status=400)
        return rephraser(request)

    use_backend(monkeypatch, qa_fails)
    docs, out = docs_file(tmp_path), tmp_path / "wrap.jsonl"
    res = invoke("rephrase", docs, "-o", out, "--styles", "easy,qa")
    assert res.exit_code == 1, res.output
    assert [g["id"] for g in read_jsonl(out)] == ["moon:0:easy", "moon:0:qa", "tides:0:easy"]
    (fail,) = read_jsonl(tmp_path / "wrap.failures.jsonl")
    assert fail["id"] == "tides:0:qa" and fail["stage"] == "rephrase"
    assert "context too long" in fail["error"] and fail["record"]["doc_id"] == "tides"

    backend = use_backend(monkeypatch, rephraser)
    res = invoke("rephrase", docs, "-o", out, "--styles", "easy,qa")
    assert res.exit_code == 0, res.output
    assert len(backend.calls) == 1  # the three answers paid for came from the cache
    assert len(read_jsonl(out)) == 4
    assert not (tmp_path / "wrap.failures.jsonl").exists()


def test_rephrase_stop_resumes_from_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    def budget_after_two(request: ChatRequest) -> str:
        if len(sent) >= 2:
            raise BudgetExceeded("--max-cost $0.01 reached")
        sent.append(style_of(request))
        return rephraser(request)

    use_backend(monkeypatch, budget_after_two)
    docs, out = docs_file(tmp_path), tmp_path / "wrap.jsonl"
    res = invoke("rephrase", docs, "-o", out, "--styles", "easy,qa", "--concurrency", "1")
    assert res.exit_code == 3, res.output
    assert "rerun the same command to resume" in flat(res.output) and not out.exists()

    backend = use_backend(monkeypatch, rephraser)
    res = invoke("rephrase", docs, "-o", out, "--styles", "easy,qa", "--concurrency", "1")
    assert res.exit_code == 0, res.output
    assert "resuming: 2 items already done" in flat(res.output)
    assert len(backend.calls) == 2
    assert [g["id"] for g in read_jsonl(out)] == [
        "moon:0:easy", "moon:0:qa", "tides:0:easy", "tides:0:qa",
    ]  # fmt: skip


def test_rephrase_unusable_document_goes_to_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_backend(monkeypatch, rephraser)
    docs = docs_file(tmp_path, [DOCS[0], {"id": "x", "article": "wrong field"}])
    out = tmp_path / "wrap.jsonl"
    res = invoke("rephrase", docs, "-o", out, "--styles", "easy")
    assert res.exit_code == 1
    assert f"{docs}:2" in flat(res.output) and "--text-field" in flat(res.output)
    (fail,) = read_jsonl(tmp_path / "wrap.failures.jsonl")
    assert (
        fail["stage"] == "load" and fail["id"] == "x" and fail["record"]["article"] == "wrong field"
    )
    assert len(read_jsonl(out)) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--styles", "easy,fancy"], "unknown style(s) fancy"),
        (["--mix", "1-1"], "REAL:SYNTHETIC"),
        (["--max-chunk-tokens", "8"], "at least 32"),
    ],
)
def test_rephrase_bad_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    use_backend(monkeypatch, rephraser)
    res = invoke("rephrase", docs_file(tmp_path), "-o", tmp_path / "o.jsonl", *extra)
    assert res.exit_code == 2 and message in flat(res.output)


def test_rephrase_user_style_from_criteria_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = use_backend(monkeypatch, rephraser)
    own = tmp_path / "styles"
    own.mkdir()
    text = (EXAMPLES.parent / "criteria" / "wrap" / "easy.md").read_text(encoding="utf-8")
    header, _ = text.rsplit("---\n", 1)
    (own / "easy.md").write_text(header + "---\nWrite it like a pirate.\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    res = invoke("rephrase", docs_file(tmp_path), "-o", out, "--styles", "easy", "--criteria", own)
    assert res.exit_code == 0, res.output
    assert "Write it like a pirate." in backend.calls[0].messages[-1].content


# ---------------------------------------------------------------- generate


def pairs_responder(request: ChatRequest) -> str:
    user = request.messages[-1].content
    topic = "tides" if "Tides" in user else "moon"
    pairs = [
        {"instruction": f"What do we know about the {topic}?", "response": f"Facts on {topic}.",
         "task_type": "open_qa"},
        {"instruction": f"what do we know about the {topic}", "response": "Same question again.",
         "task_type": "open_qa"},
        {"instruction": f"Write a haiku about the {topic}.", "response": "Short poem.",
         "task_type": "haiku_writing"},
    ]  # fmt: skip
    return json.dumps({"pairs": pairs})


def test_generate_typed_dedups_and_writes_sharegpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = use_backend(monkeypatch, pairs_responder)
    out = tmp_path / "pairs.jsonl"
    res = invoke(
        "generate", docs_file(tmp_path), "-o", out, "--per-chunk", "3", "--typed",
        "--output-format", "sharegpt",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    got = read_jsonl(out)
    assert [g["id"] for g in got] == ["moon:0:0", "moon:0:2", "tides:0:0", "tides:0:2"]
    human = got[0]["conversations"][0]
    assert human == {
        "from": "human",
        "value": "What do we know about the moon?",
        "category": "open_qa",
    }
    # An unknown type became default, with the reason kept.
    assert got[1]["conversations"][0]["category"] == "default"
    assert "haiku_writing" in got[1]["realign"]["generated"]["task_note"]
    assert got[2]["realign"]["generated"] == {"doc_id": "tides", "chunk": 0, "pair": 0}
    dups = read_jsonl(tmp_path / "pairs.duplicates.jsonl")
    assert [(d["id"], d["duplicate_of"]) for d in dups] == [
        ("moon:0:1", "moon:0:0"), ("tides:0:1", "tides:0:0"),
    ]  # fmt: skip
    assert "near-duplicates removed 2" in flat(res.output)
    schema = backend.calls[0].json_schema
    assert "open_qa" in json.dumps(schema)  # the enum of the pack's names


def test_generate_output_reads_back_for_realign_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_backend(monkeypatch, pairs_responder)
    for fmt, name in (("items", "p.json"), ("alpaca", "p.jsonl"), ("messages", "p.parquet")):
        out = tmp_path / name
        res = invoke(
            "generate", docs_file(tmp_path), "-o", out, "--typed", "--output-format", fmt,
        )  # fmt: skip
        assert res.exit_code == 0, (fmt, res.output)
        recs = list(read_records(out))
        assert all(isinstance(r, Record) for r in recs) and len(recs) == 4
        first = recs[0]
        assert isinstance(first, Record) and first.source_format == fmt
        assert first.instruction == "What do we know about the moon?"
        from realign.records import input_task_type

        assert input_task_type(first, 1) == "open_qa"  # `realign run` will not reclassify it


def test_generate_untyped_on_example_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use_backend(monkeypatch, lambda r: FakeBackend().responder(r))
    out = tmp_path / "pairs.json"
    res = invoke("generate", EXAMPLES / "docs", "-o", out, "--per-chunk", "2", "--limit", "2")
    assert res.exit_code == 0, res.output
    assert len(backend.calls) == 2  # --limit counts chunks
    got = json.loads(out.read_text(encoding="utf-8"))
    assert got and "category" not in got[0]["items"][0]


# ---------------------------------------------------------------- filter


def items_file(tmp_path: Path) -> Path:
    rows = [
        {"id": "a", "items": [
            {"from": "human", "value": "Why is the sky blue?", "category": "explain_answer"},
            {"from": "gpt", "value": "Because air scatters blue light more than red."}]},
        {"id": "b", "items": [
            {"from": "human", "value": "hi", "category": "roleplay"},
            {"from": "gpt", "value": "hello!!"}]},
        {"id": "c", "source": "web", "items": [
            {"from": "human", "value": "What causes tides?"},
            {"from": "gpt", "value": "The Moon's pull, because near water is pulled more."}]},
    ]  # fmt: skip
    p = tmp_path / "data.json"
    p.write_text(json.dumps(rows), encoding="utf-8")
    return p


def judge_responder(request: ChatRequest) -> str:
    user = request.messages[-1].content
    response = user.split("<response>")[1].split("</response>")[0]
    score = 8 if "because" in response.lower() else 2
    return json.dumps({"rationale": f"explains: {score > 5}", "score": score})


def test_filter_splits_kept_and_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = use_backend(monkeypatch, judge_responder)
    out = tmp_path / "good.json"
    res = invoke("filter", items_file(tmp_path), "-o", out, "--min-score", "7")
    assert res.exit_code == 0, res.output
    kept = json.loads(out.read_text(encoding="utf-8"))
    assert [k["id"] for k in kept] == ["a", "c"]
    assert kept[1]["source"] == "web"  # unknown fields survive
    assert kept[0]["realign"]["scores"]["educational_value"]["score"] == 8
    (dropped,) = read_jsonl(tmp_path / "good.dropped.jsonl")
    assert dropped["id"] == "b" and dropped["items"][1]["value"] == "hello!!"
    assert dropped["realign"]["scores"]["educational_value"] == {
        "score": 2, "rationale": "explains: False",
    }  # fmt: skip
    verdict = dropped["realign"]["quality_filter"]
    assert verdict["kept"] is False and verdict["min_score"] == 7 and "2 < 7" in verdict["reason"]
    assert {c.stage for c in backend.calls} == {"judge"}
    # The per-task-type table.
    assert "explain_answer" in res.output and "roleplay" in res.output
    assert "unknown" in res.output  # record c has no category


def test_filter_judge_error_goes_to_failures_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_for_b(request: ChatRequest) -> str:
        if any("hello!!" in m.content for m in request.messages):  # re-asks too
            return "not json at all"
        return judge_responder(request)

    use_backend(monkeypatch, broken_for_b)
    out = tmp_path / "good.jsonl"
    res = invoke("filter", items_file(tmp_path), "-o", out, "--aspect", "readability,factuality")
    assert res.exit_code == 1, res.output
    assert [k["id"] for k in read_jsonl(out)] == ["a", "c"]
    (fail,) = read_jsonl(tmp_path / "good.failures.jsonl")
    assert (
        fail["id"] == "b" and fail["stage"] == "judge" and fail["raw_output"] == "not json at all"
    )
    assert fail["record"]["items"][1]["value"] == "hello!!"  # the input record, not lost


def test_filter_rejects_unknown_aspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_backend(monkeypatch, judge_responder)
    res = invoke("filter", items_file(tmp_path), "-o", tmp_path / "o.json", "--aspect", "vibes")
    assert res.exit_code == 2 and "educational_value" in flat(res.output)


# ---------------------------------------------------------------- dry runs


def no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("a dry run must not create a backend")

    monkeypatch.setattr("realign.llm.build.make_backend", fail)


@pytest.mark.parametrize(
    ("cmd", "stage", "requests"),
    [
        (["rephrase", "--styles", "easy,medium,hard,qa"], "rephrase", 8),
        (["generate", "--typed"], "generate", 2),
    ],
)
def test_dry_run_estimates_without_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cmd: list[str], stage: str, requests: int
) -> None:
    no_backend(monkeypatch)
    out = tmp_path / "o.jsonl"
    res = invoke(
        cmd[0], docs_file(tmp_path), "-o", out, *cmd[1:], "--dry-run", "--model", "gpt-4o-mini"
    )
    assert res.exit_code == 0, res.output
    out_text = flat(res.output)
    assert "no request was sent" in out_text and stage in out_text
    assert f" {requests} " in out_text and "$" in out_text
    assert not out.exists()


def test_filter_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_backend(monkeypatch)
    res = invoke("filter", items_file(tmp_path), "-o", tmp_path / "o.json", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "3 records × 1 aspect(s)" in flat(res.output) and "judge" in res.output
