"""The `realign-paper` pack (issue 14 items 1 and 8): ReAlign's formats, rewrite set, rewrite
rules and settings (2 samples at 0.3, longest), and ReAlign's precomputed evidence
(`items[0].evidence`) used instead of a new search.

The llama test replays a cassette recorded against the real llama.cpp server running
SmolLM2-135M on port 8772; re-record with
`.venv/bin/python scripts/record_cassettes.py --port 8772 tests/test_paper_pack.py -k llama`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from realign.api import realign_records
from realign.cli.main import app
from realign.cli.run_impl import RunArgs, run_options
from realign.criteria import CriteriaError, PackSettings, load_pack, load_settings
from realign.io.emit import from_record
from realign.io.formats import RecordError, input_evidence, to_record
from realign.llm.base import ChatRequest
from realign.llm.fake import FakeBackend
from realign.records import Evidence, Record
from realign.stages.rewrite import build_request

runner = CliRunner()
PACK = "realign-paper"
URL = "http://127.0.0.1:8772/v1"  # the fixed port this module's cassette was recorded on

# GAIR-NLP/ReAlign constant.py: REWRITE_TASK (35 types) and RAG_TASKS (5 types).
REALIGN_REWRITE = {
    "question_generation",
    "email_generation",
    "data_generation",
    "recommendations",
    "how_to_generation",
    "planning",
    "instructional_rewriting",
    "language_polishing",
    "text_correction",
    "code_correction",
    "information_extraction",
    "keywords_extraction",
    "explain_code",
    "explain_answer",
    "text_to_text_translation",
    "text_to_code_translation",
    "code_to_code_translation",
    "code_to_text_translation",
    "open_qa",
    "closed_qa",
    "fill_in_the_blank",
    "fact_verification",
    "math_puzzles",
    "language_learning_questions",
    "natural_language_learning_tutor",
    "exam_problem_solving_tutor",
    "ml_ai_language_model_tutor",
    "general_classification",
    "ordering",
    "sentiment_analysis",
    "code_language_classification",
    "language_classification",
    "topic_classification",
    "value_judgement",
    "rejecting",
}
REALIGN_RETRIEVAL = {
    "how_to_generation",
    "open_qa",
    "fact_verification",
    "recommendations",
    "explain_answer",
}

# The parts of each ReAlign format (STRUCTURE in constant.py), in ReAlign's order: each
# phrase must occur in the pack's format body after the previous one.
_AAEC = ["analysis", "first paragraph", "answer", "explanation", "conclusion"]
_ANSWER_EXPLAIN = ["first give the answer", "explain"]
_CHANGES = ["list what was changed and why"]
SECTIONS: dict[str, list[str]] = {
    "question_generation": ["questions", "as a list"],
    "data_generation": ["data", "as a list"],
    "email_generation": [
        "subject line",
        "salutation",
        "introduction",
        "body",
        "politeness and tone",
        "closing",
        "signature",
        "attachments",
        "proofreading",
        "short, direct, professional",
    ],
    "recommendations": ["first sentence", "purpose", "recommendations", "list", "conclusion"],
    "how_to_generation": ["analysis", "answer", "explanations", "conclusion"],
    "planning": ["first sentence", "goals", "list", "timeline", "explanations", "conclusion"],
    "instructional_rewriting": ["first give the rewritten text", *_CHANGES],
    "language_polishing": ["first give the polished text", *_CHANGES],
    "text_correction": ["first give the corrected text", *_CHANGES],
    "code_correction": ["corrected code", "comments", "code block", *_CHANGES],
    "information_extraction": ["structured form", "list or a table"],
    "keywords_extraction": ["keywords", "as a list"],
    "explain_code": ["analysis", "first paragraph", "explanation", "list or a table", "conclusion"],
    "explain_answer": [
        "analysis",
        "first paragraph",
        "explanation",
        "list or a table",
        "conclusion",
    ],
    "text_to_text_translation": ["first give the translation", "explain it in a list"],
    "text_to_code_translation": [
        "analysis",
        "first paragraph",
        "code with comments",
        "code block",
        "each part",
        "list",
        "conclusion",
    ],
    "code_to_code_translation": [
        "analysis",
        "first paragraph",
        "converted code with comments",
        "code block",
        "each part",
        "list",
        "conclusion",
    ],
    "code_to_text_translation": ["analysis", "first paragraph", "segments", "conclusion"],
    "open_qa": _AAEC,
    "closed_qa": ["passage", *_AAEC],
    "fill_in_the_blank": ["analysis", "first paragraph", "answer together with an explanation"],
    "fact_verification": ["first give the answer", "explanation"],
    "math_puzzles": [
        "analysis",
        "first paragraph",
        "step by step as a list",
        "second list",
        "detailed explanation",
        "correct result",
        "conclusion",
    ],
    "language_learning_questions": ["programming language", *_AAEC],
    "natural_language_learning_tutor": ["natural", *_AAEC],
    "exam_problem_solving_tutor": ["exam", *_AAEC],
    # ReAlign's format for this type has no analysis step (checked below).
    "ml_ai_language_model_tutor": ["answer", "explanation", "conclusion"],
    "general_classification": ["classify", *_ANSWER_EXPLAIN],
    "ordering": ["order", *_ANSWER_EXPLAIN],
    "sentiment_analysis": ["sentiment", *_ANSWER_EXPLAIN],
    "code_language_classification": ["programming language", *_ANSWER_EXPLAIN],
    "language_classification": ["language", *_ANSWER_EXPLAIN],
    "topic_classification": ["topics", *_ANSWER_EXPLAIN],
    "value_judgement": ["value judgement", *_AAEC],
    "rejecting": ["decline", "explain why"],
    "default": ["analysis", "first paragraph", "answer", "explanations as a list", "conclusion"],
}


def items_record(
    question: str, response: str, category: str, evidence: list | None = None, i: int = 0
) -> dict:
    human: dict = {"from": "human", "value": question, "category": category}
    if evidence is not None:
        human["evidence"] = evidence
    return {"id": i, "items": [human, {"from": "gpt", "value": response}]}


# ---------------------------------------------------------------- the pack


def test_rewrite_set_and_retrieval_types_are_realigns() -> None:
    pack = load_pack(PACK)
    assert set(pack.names()) == set(load_pack().names())  # ReAlign's 46 task types
    assert {n for n in pack.names() if pack[n].rewrite} == REALIGN_REWRITE
    assert {n for n in pack.names() if pack[n].retrieval} == REALIGN_RETRIEVAL
    assert not pack["code_simplification"].rewrite and not pack["table_extraction"].rewrite
    # The 36 types ReAlign gives a format: its 35 rewritten types and the catch-all.
    assert {n for n in pack.names() if not pack[n].format.startswith("Not rewritten")} == (
        REALIGN_REWRITE | {"default"}
    )
    assert set(SECTIONS) == REALIGN_REWRITE | {"default"}


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_each_format_keeps_realigns_parts_in_order(name: str) -> None:
    body = load_pack(PACK)[name].format.lower()
    pos = 0
    for phrase in SECTIONS[name]:
        found = body.find(phrase, pos)
        assert found >= 0, f"{name}: {phrase!r} missing after position {pos} in {body!r}"
        pos = found + len(phrase)
    # ReAlign's formats are fluent text: no added sections such as Check/Tip/Usage/Notes.
    for label in ("**", "tip:", "usage:", "check:", "notes:"):
        assert label not in body
    if name == "ml_ai_language_model_tutor":
        assert "analysis" not in body


def test_pack_settings_are_realigns_rewrite_settings() -> None:
    pack = load_pack(PACK)
    assert pack.settings == PackSettings(
        prompt="rewrite_paper",
        samples=2,
        temperature=0.3,
        selection="longest",
        filter_preset="alpaca",  # ReAlign's own selection rules
    )
    assert load_pack().settings == PackSettings()  # the default pack keeps realign's own
    # Same names, descriptions and examples: one trained embedding classifier serves both.
    assert pack.classifier_hash == load_pack().classifier_hash
    assert pack.content_hash != load_pack().content_hash


def test_flags_override_the_pack_defaults(tmp_path: Path) -> None:
    base = {"input": tmp_path / "in.json", "output": tmp_path / "out.json"}
    paper = load_pack(PACK)
    opts = run_options(RunArgs(**base, pack=PACK), paper)
    assert (opts.prompt, opts.samples, opts.temperature, opts.selection) == (
        "rewrite_paper",
        2,
        0.3,
        "longest",
    )
    opts = run_options(
        RunArgs(**base, pack=PACK, samples=4, temperature=0.0, selection="first"), paper
    )
    assert (opts.prompt, opts.samples, opts.temperature, opts.selection) == (
        "rewrite_paper",
        4,
        0.0,
        "first",
    )
    opts = run_options(RunArgs(**base), load_pack())
    assert (opts.prompt, opts.samples, opts.temperature, opts.selection) == (
        "rewrite",
        1,
        None,
        "longest",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("samples: 2\nseed: 1\n", "setting 'seed'"),
        ("samples: 0\n", "setting 'samples'"),
        ("temperature: 3\n", "setting 'temperature'"),
        ("prompt: no_such_template\n", "no prompt template 'no_such_template'"),
        ("selection: shortest\n", "setting 'selection'"),
        ("- samples: 2\n", "must be a mapping"),
        ("samples: [2\n", "does not parse as YAML"),
    ],
)
def test_bad_pack_settings_name_the_file_and_setting(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "pack.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(CriteriaError) as e:
        load_settings(tmp_path)
    assert str(tmp_path / "pack.yaml") in str(e.value) and message in str(e.value)


def test_validate_and_list_show_the_pack_settings(tmp_path: Path) -> None:
    res = runner.invoke(app, ["criteria", "validate", PACK])
    assert res.exit_code == 0, res.output
    assert "46 criteria file(s)" in res.output
    assert "pack.yaml is valid: prompt rewrite_paper, samples 2, temperature 0.3" in res.output
    assert "ignored" not in res.output  # pack.yaml is not a stray non-.md file

    res = runner.invoke(app, ["criteria", "list", "--pack", PACK], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "run defaults (pack.yaml): prompt rewrite_paper, samples 2" in res.output

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("open_qa.md", "default.md"):
        (bad / f).write_text((Path(load_pack(PACK)[f[:-3]].path)).read_text(), encoding="utf-8")
    (bad / "pack.yaml").write_text("samples: 40\n", encoding="utf-8")
    res = runner.invoke(app, ["criteria", "validate", str(bad)])
    assert res.exit_code == 1
    assert "pack.yaml: setting 'samples'" in res.output


# ---------------------------------------------------------------- the rewrite request


def _request(category: str, evidence: list[Evidence]) -> ChatRequest:
    pack = load_pack(PACK)
    record = to_record(
        items_record("How do I keep basil alive indoors?", "Water it often.", category), 0, "items"
    )
    opts = run_options(RunArgs(input=Path("in.json"), output=Path("out.json"), pack=PACK), pack)
    return build_request(
        record,
        1,
        pack[category],
        evidence,
        force=False,
        samples=opts.samples,
        prompt=opts.prompt,
        temperature=opts.temperature,
    )


def test_rewrite_request_carries_the_format_and_numbered_evidence() -> None:
    evidence = [
        Evidence(snippet="Basil needs six hours of sun."),
        Evidence(snippet="Do not overwater."),
    ]
    req = _request("how_to_generation", evidence)
    system, user = (m.content for m in req.messages)
    assert (req.n, req.temperature) == (2, 0.3)
    # ReAlign's rules: adaptive, format only, answer correctly, fluent, no added subheadings,
    # and the evidence rule only when evidence is given.
    assert "return the assistant's response unchanged" in system
    assert "Change only the format" in system
    assert "no subheadings" in system
    assert "evidence" in system
    fmt = load_pack(PACK)["how_to_generation"].format
    assert f"[Format start]\n{fmt}\n[Format end]" in user
    assert (
        "[Evidence start]\n1. Basil needs six hours of sun.\n\n2. Do not overwater.\n[Evidence end]"
        in user
    )
    assert user.index("[Question start]") < user.index("[Response start]")
    assert user.index("[Response start]") < user.index("[Format start]")
    assert user.index("[Format start]") < user.index("[Evidence start]")


def test_rewrite_request_without_evidence_has_no_evidence_rule() -> None:
    req = _request("planning", [])
    system, user = (m.content for m in req.messages)
    assert "evidence" not in system.lower() and "[Evidence start]" not in user
    assert load_pack(PACK)["planning"].format in user


# ---------------------------------------------------------------- ReAlign's evidence


def test_input_evidence_is_read_from_the_question_turn() -> None:
    obj = items_record(
        "Who discovered penicillin?",
        "Fleming.",
        "open_qa",
        ["Alexander Fleming discovered penicillin in 1928.", "  ", {"snippet": "x", "url": "u"}],
    )
    record = to_record(obj, 0, "items")
    got = input_evidence(record, 1)
    assert [(e.snippet, e.url, e.provider) for e in got] == [
        ("Alexander Fleming discovered penicillin in 1928.", "", "input"),
        ("x", "u", "input"),
    ]
    assert input_evidence(to_record(items_record("q", "a", "open_qa"), 0, "items"), 1) == []


@pytest.mark.parametrize(
    ("evidence", "field"),
    [("one snippet", "items[0].evidence"), ([1, "ok"], "items[0].evidence[0]")],
)
def test_malformed_input_evidence_fails_only_its_record(evidence: object, field: str) -> None:
    obj = items_record("q", "a", "open_qa")
    obj["items"][0]["evidence"] = evidence
    with pytest.raises(RecordError) as e:
        to_record(obj, 0, "items")
    assert e.value.field == field


class _NoSearch:
    async def evidence_for(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the input's evidence should have been used")


def test_run_uses_input_evidence_instead_of_searching_and_keeps_it() -> None:
    snippets = ["Canberra has been the capital since 1913.", "It lies in the ACT."]
    obj = items_record("What is the capital of Australia?", "Sydney.", "open_qa", snippets)
    backend = FakeBackend()
    (out,) = realign_records(
        [to_record(obj, 0, "items")], backend=backend, pack=PACK, retriever=_NoSearch()
    )
    assert isinstance(out, Record)
    unit = out.meta.units[0]
    assert [e.snippet for e in unit.evidence] == snippets
    assert unit.evidence_note == "evidence given in the input: no search"
    (req,) = [c for c in backend.calls if c.stage == "rewrite"]
    assert (req.n, req.temperature) == (2, 0.3)  # the pack's settings through the Python API
    assert f"1. {snippets[0]}\n\n2. {snippets[1]}" in req.messages[-1].content
    assert len(unit.candidates) == 2
    written = from_record(out)
    assert written["items"][0]["evidence"] == snippets  # the input field survives


def test_dry_run_counts_no_search_for_input_evidence(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    data = [items_record("How do I boil an egg?", "Boil it.", "how_to_generation", ["7 min."])]
    src.write_text(json.dumps(data), encoding="utf-8")
    argv = ["run", str(src), "-o", str(tmp_path / "o.json"), "--dry-run", "--pack", PACK]
    argv += ["--base-url", "http://127.0.0.1:9/v1", "--model", "gpt-4o-mini"]
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert "search requests" not in res.output
    data[0]["items"][0].pop("evidence")
    src.write_text(json.dumps(data), encoding="utf-8")
    res = runner.invoke(app, argv)
    assert "search requests (priced by your search provider): 1" in res.output


# ---------------------------------------------------------------- end to end, recorded


@pytest.mark.vcr
def test_llama_run_paper_pack_requests_carry_format_and_evidence(
    tmp_path: Path, vcr: object
) -> None:
    snippets = [
        "Keep basil in a south-facing window with six to eight hours of light.",
        "Water basil when the top inch of soil is dry.",
    ]
    data = [
        items_record(
            "How do I keep a basil plant alive indoors?",
            "Give it plenty of light and water it when the soil is dry.",
            "how_to_generation",
            snippets,
            0,
        ),
        items_record(
            "Tom has 3 apples and buys 4 more. How many apples does he have?",
            "3 + 4 = 7. Tom has 7 apples.",
            "math_puzzles",
            None,
            1,
        ),
    ]
    src, out = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(data), encoding="utf-8")
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            "-o",
            str(out),
            "--pack",
            PACK,
            "--base-url",
            URL,
            "--model",
            "smollm2-135m-instruct",
            "--retrieval",
            "none",
            "--concurrency",
            "1",
        ],
    )
    assert res.exit_code in (0, 1), res.output
    cassette: Any = vcr  # pytest-recording's cassette for this test
    if cassette.write_protected:  # replaying: every recorded request was sent again, as is
        assert cassette.all_played
    bodies = [json.loads(r.body) for r in cassette.requests]
    pack = load_pack(PACK)
    by_type: dict[str, list[dict]] = {"how_to_generation": [], "math_puzzles": []}
    for body in bodies:
        user = body["messages"][-1]["content"]
        for name, reqs in by_type.items():
            if f"[Format start]\n{pack[name].format}\n[Format end]" in user:
                reqs.append(body)
    # Two candidates per response at 0.3 (llama.cpp ignores n: two requests each).
    assert [len(v) for v in by_type.values()] == [2, 2]
    assert len(bodies) == 4  # both came from the input's category: no classify request
    for body in (b for v in by_type.values() for b in v):
        assert body["temperature"] == 0.3
    evidence = "[Evidence start]\n1. " + snippets[0] + "\n\n2. " + snippets[1] + "\n[Evidence end]"
    assert all(evidence in b["messages"][-1]["content"] for b in by_type["how_to_generation"])
    assert all(
        "[Evidence start]" not in b["messages"][-1]["content"] for b in by_type["math_puzzles"]
    )
    written = json.loads(out.read_text())
    assert written[0]["items"][0]["evidence"] == snippets
    for rec in written:
        unit = rec["realign"]["units"][0]
        assert rec["realign"]["provenance"]["criteria_pack"] == PACK
        assert unit["status"] in {"rewritten", "kept"}
        assert len(unit["candidates"]) == 2
    assert written[0]["realign"]["units"][0]["evidence_note"] == (
        "evidence given in the input: no search"
    )
