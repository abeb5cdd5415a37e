"""`realign run --dry-run` counts a rewrite only where the run would make one: the estimate
asks the pipeline's own `skip_reason` instead of copying (part of) its rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packs import write_pack
from typer.testing import CliRunner

from realign.cli.main import app


def record(rid: str, question: str, answer: str, category: str) -> dict[str, Any]:
    human = {"from": "human", "value": question, "category": category}
    return {"id": rid, "items": [human, {"from": "gpt", "value": answer}]}


def test_dry_run_skips_what_the_run_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.json"
    rows = [
        record("a", "What is 2+3?", "It is 5.", "math_puzzles"),  # rewritten
        record("b", "What is 4+4?", "   ", "math_puzzles"),  # empty response: skipped
        record("c", "   ", "Some answer.", "math_puzzles"),  # empty instruction: skipped
        record("d", "Tell me a story.", "Once…", "story_generation"),  # rewrite: no
    ]
    src.write_text(json.dumps(rows), encoding="utf-8")
    seen: dict[str, int] = {}

    def capture(model: str, stages: list[Any]) -> Any:
        seen.update({s.stage: s.requests for s in stages})
        raise SystemExit(0)  # the counts are all this test needs

    monkeypatch.setattr("realign.llm.pricing.estimate", capture)
    argv = ["run", str(src), "-o", str(tmp_path / "out.json"), "--dry-run", "--backend", "fake"]
    CliRunner().invoke(app, [*argv, "--pack", str(write_pack(tmp_path / "pack"))])
    assert seen == {"rewrite": 1}  # only record a; no classify (every unit has a type)

    # The run itself agrees: one rewritten unit, the others skipped with those reasons.
    out = tmp_path / "out.json"
    res = CliRunner().invoke(
        app, [*argv[:4], "--backend", "fake", "--pack", str(tmp_path / "pack")]
    )
    assert res.exit_code in (0, 1), res.output
    reasons = {r["id"]: r["realign"]["reason"] for r in json.loads(out.read_text())}
    assert reasons["b"] == "empty response" and reasons["c"] == "empty instruction"
    assert reasons["d"] == "criterion 'story_generation' says rewrite: no"
