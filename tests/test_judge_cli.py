"""`realign judge` end to end on the registry's `fake` backend (no model, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from realign.cli.main import app
from realign.llm.base import ChatRequest
from realign.llm.engine import BudgetExceeded
from realign.llm.fake import FakeBackend, default_responder
from realign.pipeline.state import state_path

QUESTIONS = ["Capital of France?", "Largest planet?", "Author of Hamlet?"]


def items(
    path: Path, answers: list[str], ids: list[object] | None = None, category: str | None = None
) -> Path:
    rows = []
    for k, (q, a) in enumerate(zip(QUESTIONS, answers, strict=False)):
        human = {"from": "human", "value": q} | ({"category": category} if category else {})
        rows.append(
            {
                "id": (ids or list(range(len(answers))))[k],
                "items": [human, {"from": "gpt", "value": a}],
            }
        )
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_judge_pairwise_writes_comparison_and_report(tmp_path: Path) -> None:
    a = items(tmp_path / "a.json", ["It is Paris.", "Saturn.", "Shakespeare wrote it."])
    b = items(tmp_path / "b.json", ["**Paris**", "- Jupiter", "Marlowe"], category="open_qa")
    gold = items(tmp_path / "gold.json", ["Paris", "Jupiter", "William Shakespeare\nShakespeare"])
    out, page = tmp_path / "cmp.json", tmp_path / "cmp.html"
    res = CliRunner().invoke(
        app,
        [
            "judge",
            str(a),
            str(b),
            "--reference",
            str(gold),
            "-o",
            str(out),
            "--html",
            str(page),
            "--backend",
            "fake",
        ],
    )
    assert res.exit_code == 0, res.output
    cmp = json.loads(out.read_text(encoding="utf-8"))
    assert cmp["kind"] == "comparison" and cmp["model"] == "gpt-4o"  # the judge's default model
    assert len(cmp["pairs"]) == 3
    assert set(cmp["summary"]) == {"alignment", "factuality", "readability"}
    # The fake judge always answers "A": pure position bias, so every verdict is a tie.
    assert cmp["summary"]["factuality"]["overall"]["counts"] == {"win": 0, "tie": 3, "lose": 0}
    assert cmp["metrics_a"]["containment_rate"] == 2 / 3
    assert cmp["metrics_b"]["containment_rate"] == 2 / 3
    v = cmp["pairs"][0]["verdicts"]["readability"]
    assert v["a_first"]["winner"] == "a" and v["b_first"]["winner"] == "b"
    assert "B (the second input)" in cmp["convention"]
    assert "<title>realign comparison" in page.read_text(encoding="utf-8")
    assert "contains a gold answer: 66.7%" in res.output
    # The fake judge gives one rationale for everything: named as an unfit judge, not a crash.
    assert cmp["judge_warnings"] and all(
        "rationales are the same" in w for w in cmp["judge_warnings"]
    )
    flat = " ".join(res.output.split())
    assert "judge model gpt-4o looks unfit for judging" in flat
    assert "the judge looks unfit" in page.read_text(encoding="utf-8")


def test_judge_pointwise_scores(tmp_path: Path) -> None:
    a = items(tmp_path / "a.json", ["It is Paris.", "Saturn."], category="open_qa")
    out = tmp_path / "scores.json"
    res = CliRunner().invoke(
        app, ["judge", str(a), "-o", str(out), "--aspects", "readability", "--backend", "fake"]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text(encoding="utf-8"))
    assert rep["kind"] == "scores" and rep["aspects"] == ["readability"]
    assert [u["scores"]["readability"]["score"] for u in rep["units"]] == [7, 7]


def test_judge_lists_unmatched_and_unreadable_and_exits_non_zero(tmp_path: Path) -> None:
    a = items(tmp_path / "a.json", ["x", "y", "z"], ids=["1", "2", "3"])
    b_rows = json.loads(items(tmp_path / "b.json", ["x", "y"], ids=["1", "9"]).read_text())
    b_rows[1]["items"][0]["value"] = "A question nobody asked?"
    b_rows.append({"id": "bad", "items": "not a list"})
    (tmp_path / "b.json").write_text(json.dumps(b_rows), encoding="utf-8")
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(
        app,
        [
            "judge",
            str(a),
            str(tmp_path / "b.json"),
            "-o",
            str(out),
            "--aspects",
            "readability",
            "--backend",
            "fake",
        ],
    )
    assert res.exit_code == 1
    cmp = json.loads(out.read_text(encoding="utf-8"))
    assert [p["id_a"] for p in cmp["pairs"]] == ["1"]
    assert sorted((u["side"], u["id"]) for u in cmp["matching"]["unmatched"]) == [
        ("a", "2"),
        ("a", "3"),
        ("b", "9"),
    ]
    assert (
        len(cmp["read_errors"]) == 1
        and "b.json" in cmp["read_errors"][0]
        and "bad" in cmp["read_errors"][0]
    )


def test_judge_rejects_bad_arguments(tmp_path: Path) -> None:
    a = items(tmp_path / "a.json", ["x"])
    r = CliRunner().invoke(
        app,
        [
            "judge",
            str(a),
            "-o",
            str(tmp_path / "o.json"),
            "--aspects",
            "beauty",
            "--backend",
            "fake",
        ],
    )
    assert r.exit_code == 2 and "unknown aspect(s) beauty" in r.output
    r = CliRunner().invoke(app, ["judge", "-o", str(tmp_path / "o.json")])
    assert r.exit_code == 2 and "Missing argument" in r.output
    r = CliRunner().invoke(
        app,
        [
            "judge",
            str(tmp_path / "missing.json"),
            "-o",
            str(tmp_path / "o.json"),
            "--backend",
            "fake",
        ],
    )
    assert r.exit_code == 2 and "missing.json: no such file" in r.output


def test_report_flags_the_judge_of_an_output_written_before_the_check(tmp_path: Path) -> None:
    a = items(tmp_path / "a.json", ["It is Paris.", "Saturn.", "Shakespeare wrote it."])
    b = items(tmp_path / "b.json", ["**Paris**", "- Jupiter", "Marlowe"])
    out, page = tmp_path / "cmp.json", tmp_path / "cmp.html"
    args = ["judge", str(a), str(b), "-o", str(out), "--aspects", "readability"]
    assert CliRunner().invoke(app, [*args, "--backend", "fake"]).exit_code == 0
    old = json.loads(out.read_text(encoding="utf-8"))
    del old["judge_warnings"]  # as written by an older realign
    out.write_text(json.dumps(old), encoding="utf-8")
    res = CliRunner().invoke(app, ["report", str(out), "--html", str(page)])
    assert res.exit_code == 0, res.output
    html = page.read_text(encoding="utf-8")
    assert "the judge looks unfit" in html and "rationales are the same text" in html


def test_a_stopped_judge_resumes_without_asking_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`realign judge` had no resume: a stop wrote nothing and, without the cache, a rerun
    asked for every answer again. Here a budget stop hits after 4 answers; the rerun of the
    same command (with --no-cache, so only the run state can answer) asks for the rest only and
    writes what an uninterrupted run writes."""
    src = items(tmp_path / "a.json", ["It is Paris.", "Saturn.", "Shakespeare wrote it."])
    argv = ["judge", str(src), "--aspects", "readability,alignment", "--no-cache"]

    def judge_with(backend: FakeBackend, out: Path) -> Any:
        monkeypatch.setattr("realign.llm.build.make_backend", lambda opts, stderr=None: backend)
        return CliRunner().invoke(app, [*argv, "-o", str(out)])

    whole = FakeBackend()
    assert judge_with(whole, tmp_path / "whole.json").exit_code == 0
    total = len(whole.calls)
    assert total == 6  # 3 responses × 2 aspects

    def stops_after_4(request: ChatRequest) -> str:
        if len(stopping.calls) > 4:
            raise BudgetExceeded("--max-cost reached")
        return default_responder(request)

    stopping = FakeBackend(stops_after_4)
    out = tmp_path / "scores.json"
    res = judge_with(stopping, out)
    assert res.exit_code == 3, res.output
    assert "4 judge answers are saved; rerun the same command to resume" in res.output
    assert not out.exists()

    rest = FakeBackend()
    res = judge_with(rest, out)
    assert res.exit_code == 0, res.output
    assert "resuming: 4 judge answers already done" in res.output
    assert len(rest.calls) == total - 4  # nothing answered before is asked again

    def without_time(path: Path) -> dict[str, Any]:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("created")
        data.pop("input")  # the file name
        return data  # type: ignore[no-any-return]

    assert without_time(out) == without_time(tmp_path / "whole.json")
    assert not state_path(out).exists()  # a finished run leaves no state behind
