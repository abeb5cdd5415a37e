"""`realign criteria import-realign` (issue 22 item 1): a pack from a ReAlign checkout, read with
`ast`, with the checkout's texts exactly, run in ReAlign's plain-text answer style.

The checkout is SYNTHETIC (`tests/realign_checkout.py`): ReAlign's file shapes, our own
placeholder text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import realign_checkout as rc
import yaml
from typer.testing import CliRunner

from realign.cli.main import app
from realign.criteria import load_pack
from realign.llm.base import ChatRequest
from realign.llm.fake import FakeBackend
from realign.llm.registry import register_backend
from realign.realign_import import ImportProblem, module_constants, read_checkout
from realign.stages.filter import PRESETS

runner = CliRunner()
TEMPLATE_OF = {
    "rewrite_system": "REWRITING_SYSTEM_PROMPT",
    "rewrite_user": "REWRITING_USER_PROMPT",
    "rewrite_retrieval_system": "REWRITING_RETRIEVAL_SYSTEM_PROMPT",
    "rewrite_retrieval_user": "REWRITING_RETRIEVAL_USER_PROMPT",
    "rewrite_force_system": "NON_ADAPTIVITTY_REWRITING_SYSTEM_PROMPT",
    "rewrite_force_retrieval_system": "NON_ADAPTIVITTY_REWRITING_RETRIEVAL_SYSTEM_PROMPT",
    "judge_readability_system": "READABILITY_EVALUATION_SYSTEM_PROMPT",
    "judge_readability_user": "READABILITY_EVALUATION_USER_PROMPT",
    "judge_factuality_system": "FACTUALITY_EVALUATION_SYSTEM_PROMPT",
    "judge_factuality_user": "FACTUALITY_EVALUATION_USER_PROMPT",
}


def imported(tmp_path: Path, **kw: Any) -> Path:
    root = rc.write_checkout(tmp_path / "ReAlign", **kw)
    out = tmp_path / "pack"
    res = runner.invoke(app, ["criteria", "import-realign", str(root), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_import_writes_the_checkouts_texts_exactly(tmp_path: Path) -> None:
    out = imported(tmp_path)
    pack = load_pack(str(out))
    assert set(pack.criteria) == set(rc.DESCRIPTIONS)
    for name, crit in pack.criteria.items():
        assert crit.description == rc.DESCRIPTIONS[name]
        assert crit.format == rc.STRUCTURES.get(name, "").strip()  # verbatim, whitespace aside
        assert crit.rewrite == (name in rc.REWRITE)
        assert crit.retrieval == (name in rc.RAG)
    assert pack["math_puzzles"].group == "specialized_educational_dialog"
    assert pack["default"].rewrite is False and "PH-FORMAT-DEFAULT" in pack["default"].format
    # the templates are the checkout's strings byte for byte (surrounding newlines included)
    assert pack.templates == {k: rc.PROMPTS[v] for k, v in TEMPLATE_OF.items()}
    s = pack.settings
    assert (s.answer_style, s.samples, s.temperature, s.selection, s.max_tokens) == (
        "realign-text",
        2,
        0.3,
        "longest",
        2048,
    )
    assert s.filter_preset == "alpaca"  # the selection main() applies
    assert (s.search_country, s.search_language, s.search_style, s.retrieve_k) == (
        "gb",
        "en",
        "realign",
        5,
    )
    assert s.source is not None and s.source["commit"] == rc.COMMIT
    assert s.model is None  # written as a comment, not forced on the user
    assert "placeholder-model-1" in (out / "pack.yaml").read_text()
    # a type realign has no examples for gets placeholders, and a warning says so
    assert pack["widget_sorting"].examples[0].startswith("TODO")
    assert pack["open_qa"].examples == load_pack()["open_qa"].examples


def test_import_never_runs_the_checkout(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)\n"
    out = imported(tmp_path, constant=evil + rc.constant_py())
    assert not marker.exists()
    assert load_pack(str(out))["open_qa"].format.startswith("PH-FORMAT-QA")


def test_fstring_of_names_becomes_a_format_template(tmp_path: Path) -> None:
    path = tmp_path / "c.py"
    path.write_text('A = f"Q: {question}\\nR: {response} {{x}}"\nB = "x" + "y"\n')
    assert module_constants(path) == {"A": "Q: {question}\nR: {response} {{x}}", "B": "xy"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rename": {"REWRITE_TASK": "REWRITE_TASKS"}}, "REWRITE_TASK"),
        ({"rename": {"NON_ADAPTIVITTY_REWRITING_SYSTEM_PROMPT": "X"}}, "NON_ADAPTIVITTY_REWRITING"),
        (
            {"prompts": {**rc.PROMPTS, "REWRITING_USER_PROMPT": "{question} {response}"}},
            "{structure}",
        ),
    ],
)
def test_a_changed_name_is_a_clear_error(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    root = rc.write_checkout(tmp_path / "R", constant=rc.constant_py(**change))
    res = runner.invoke(app, ["criteria", "import-realign", str(root), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "error:" in res.output and message in res.output and "constant.py" in res.output


def test_not_a_checkout_names_what_is_missing(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["criteria", "import-realign", str(tmp_path), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 2 and "code/constant.py not found" in res.output
    root = rc.write_checkout(tmp_path / "R", reformat="x = 1\n")
    with pytest.raises(ImportProblem, match="--top_k"):
        read_checkout(root)


def test_no_git_means_no_commit(tmp_path: Path) -> None:
    out = imported(tmp_path, git=False)
    assert "commit" not in (load_pack(str(out)).settings.source or {})


# ---------------------------------------------------------------- the run sends them

# Faithful rewrites (the filter keeps the original when a rewrite loses its answer).
REVISED = "The builders were masons.\n\n**Answer:** Masons built it."
REVISED_MATH = "Six times seven is 42.\n\n**Answer:** 42"


def responder(request: ChatRequest) -> str:
    revised = REVISED if "Who built it?" in request.messages[-1].content else REVISED_MATH
    return f"Reasoning: reshaped to the format.\nRevised response: {revised}"


@pytest.fixture
def recording() -> FakeBackend:
    backend = FakeBackend(responder)
    register_backend("test-import-record", lambda s: backend, replace=True)
    return backend


def items(question: str, answer: str, category: str, **extra: Any) -> dict[str, Any]:
    first = {"from": "human", "value": question, "category": category, **extra}
    return {"id": question[:8], "items": [first, {"from": "gpt", "value": answer}]}


def write_input(tmp_path: Path) -> Path:
    data = [
        items("Who built it?", "Masons.", "open_qa", evidence=["Snippet one.", "Snippet two."]),
        items("What is 6 times 7?", "42", "math_puzzles"),
        items("Tell a tale.", "Once upon a time.", "story_generation"),
    ]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(data))
    return path


def run(tmp_path: Path, pack: Path, *extra: str) -> Any:
    argv = ["run", str(write_input(tmp_path)), "-o", str(tmp_path / "out.json")]
    argv += ["--backend", "test-import-record", "--criteria", str(pack), "--no-cache", *extra]
    return runner.invoke(app, argv)


def test_run_sends_the_imported_texts_and_reads_the_text_answer(
    tmp_path: Path, recording: FakeBackend
) -> None:
    pack = imported(tmp_path)
    res = run(tmp_path, pack, "--retrieval", "none")
    assert res.exit_code == 0, res.output
    calls = {c.messages[-1].content.split("\n")[2]: c for c in recording.calls}
    qa, math = calls["Who built it?"], calls["What is 6 times 7?"]
    p = rc.PROMPTS
    assert [m.role for m in qa.messages] == ["system", "user"]
    assert qa.messages[0].content == p["REWRITING_RETRIEVAL_SYSTEM_PROMPT"].strip()
    assert (
        qa.messages[1].content
        == p["REWRITING_RETRIEVAL_USER_PROMPT"]
        .format(
            question="Who built it?",
            response="Masons.",
            structure=rc.STRUCTURES["open_qa"].strip(),
            evidence="1. Snippet one.\n\n2. Snippet two.",
        )
        .strip()
    )
    assert math.messages[0].content == p["REWRITING_SYSTEM_PROMPT"].strip()
    assert (
        math.messages[1].content
        == p["REWRITING_USER_PROMPT"]
        .format(
            question="What is 6 times 7?",
            response="42",
            structure=rc.STRUCTURES["math_puzzles"].strip(),
        )
        .strip()
    )
    assert (qa.n, qa.temperature, qa.max_tokens, qa.json_schema) == (2, 0.3, 2048, None)
    assert len(recording.calls) == 2  # story_generation is not in REWRITE_TASK
    out = json.loads((tmp_path / "out.json").read_text())
    unit = out[0]["realign"]["units"][0]
    assert out[0]["items"][1]["value"] == REVISED.strip()
    assert unit["candidates"][0]["reasoning"] == "reshaped to the format."
    assert unit["filter"]["preset"] == "alpaca"
    prov = out[0]["realign"]["provenance"]
    assert prov["criteria_folder"] == str(pack) and len(prov["pack_hash"]) == 16
    assert out[2]["realign"]["status"] == "skipped"


def test_force_sends_the_non_adaptive_system_text(tmp_path: Path, recording: FakeBackend) -> None:
    pack = imported(tmp_path)
    assert run(tmp_path, pack, "--retrieval", "none", "--force").exit_code == 0
    systems = {c.messages[0].content for c in recording.calls}
    assert systems == {
        rc.PROMPTS["NON_ADAPTIVITTY_REWRITING_SYSTEM_PROMPT"].strip(),
        rc.PROMPTS["NON_ADAPTIVITTY_REWRITING_RETRIEVAL_SYSTEM_PROMPT"].strip(),
    }


def test_a_reply_without_revised_response_fails_the_record(tmp_path: Path) -> None:
    backend = FakeBackend(lambda r: "I would rather not follow the format.")
    register_backend("test-import-bad", lambda s: backend, replace=True)
    pack = imported(tmp_path)
    argv = ["run", str(write_input(tmp_path)), "-o", str(tmp_path / "out.json"), "--no-cache"]
    res = runner.invoke(app, [*argv, "--backend", "test-import-bad", "--criteria", str(pack)])
    assert res.exit_code == 1
    fails = [json.loads(x) for x in (tmp_path / "out.failures.jsonl").read_text().splitlines()]
    assert {f["stage"] for f in fails} == {"rewrite"} and len(fails) == 2
    assert "Revised response" in fails[0]["error"]
    assert fails[0]["raw_output"] == "I would rather not follow the format."
    assert len(backend.calls) == 6  # asked 3 times per record


def test_flags_override_the_imported_pack(tmp_path: Path, recording: FakeBackend) -> None:
    pack = imported(tmp_path)
    res = run(tmp_path, pack, "--retrieval", "none", "--samples", "1", "--filter-preset", "default")
    assert res.exit_code == 0, res.output
    assert {c.n for c in recording.calls} == {1}
    out = json.loads((tmp_path / "out.json").read_text())
    decision = out[0]["realign"]["units"][0]["filter"]
    assert decision.get("preset", "default") == "default"  # written only when not the default
    assert decision["checked"] == list(PRESETS["default"])


def test_pack_yaml_of_an_imported_pack_validates(tmp_path: Path) -> None:
    out = imported(tmp_path)
    data = yaml.safe_load((out / "pack.yaml").read_text())
    assert data["answer_style"] == "realign-text"
    res = runner.invoke(app, ["criteria", "validate", str(out)])
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------- the judge prompts


def judge_data(tmp_path: Path, name: str, answers: list[str]) -> Path:
    rows = [
        {"id": i, "items": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for i, (q, a) in enumerate(
            zip(["Capital of France?", "Largest planet?"], answers, strict=True)
        )
    ]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(rows))
    return path


def test_judge_sends_the_imported_judge_prompts_and_reads_their_verdicts(tmp_path: Path) -> None:
    pack = imported(tmp_path)

    def judge(request: ChatRequest) -> str:
        user = request.messages[-1].content
        if request.messages[0].content.startswith("PH-JUDGE-READ"):  # the better one is "rich"
            b_part = user.split("\nB ", 1)[1]
            better = "B" if "rich" in b_part else "A"
            return f"One is clearer than the other.\n[[{better}]]"
        return "Matches the reference. Rating: [[8]]"

    backend = FakeBackend(judge)
    register_backend("test-import-judge", lambda s: backend, replace=True)
    a = judge_data(tmp_path, "a", ["Paris", "Jupiter"])
    b = judge_data(tmp_path, "b", ["A rich answer: Paris.", "A rich answer: Jupiter."])
    out = tmp_path / "cmp.json"
    argv = ["judge", str(a), str(b), "-o", str(out), "--aspects", "readability"]
    res = runner.invoke(app, [*argv, "--backend", "test-import-judge", "--criteria", str(pack)])
    assert res.exit_code == 0, res.output
    first = backend.calls[0]
    assert first.messages[0].content == rc.PROMPTS["READABILITY_EVALUATION_SYSTEM_PROMPT"]
    assert first.json_schema is None and len(backend.calls) == 4  # 2 pairs, both orders
    cmp = json.loads(out.read_text())
    assert cmp["summary"]["readability"]["overall"]["counts"] == {"win": 2, "tie": 0, "lose": 0}
    assert cmp["pairs"][0]["verdicts"]["readability"]["a_first"]["rationale"] == (
        "One is clearer than the other."
    )

    gold = judge_data(tmp_path, "gold", ["Paris", "Jupiter"])
    scores = tmp_path / "scores.json"
    argv = ["judge", str(b), "-o", str(scores), "--aspects", "factuality", "--reference", str(gold)]
    res = runner.invoke(app, [*argv, "--backend", "test-import-judge", "--criteria", str(pack)])
    assert res.exit_code == 0, res.output
    fact = [c for c in backend.calls if c.messages[0].content.startswith("PH-JUDGE-FACT")]
    assert fact[0].messages[1].content == rc.PROMPTS["FACTUALITY_EVALUATION_USER_PROMPT"].format(
        question="Capital of France?", ref_answer="Paris", answer="A rich answer: Paris."
    )
    rep = json.loads(scores.read_text())
    assert [u["scores"]["factuality"]["score"] for u in rep["units"]] == [8, 8]


def test_a_value_realign_cannot_use_names_the_task_type(tmp_path: Path) -> None:
    text = rc.constant_py().replace(repr(rc.DESCRIPTIONS["open_qa"]), "'x'")
    root = rc.write_checkout(tmp_path / "R", constant=text)
    with pytest.raises(ImportProblem, match="task type 'open_qa': description"):
        read_checkout(root)
