"""The one input check of every dataset command: a Hugging Face dataset saved with
`datasets.save_to_disk` is read as `DIR:SPLIT` by `run`, `classify` and `judge`, as `convert`
always did (they used to stop at `no such file`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packs import write_pack
from typer.testing import CliRunner

from realign.cli.main import app

datasets = pytest.importorskip("datasets")  # the `hf` extra

TRAIN = [
    {"instruction": "What is 2+2?", "output": "4"},
    {"instruction": "Name a primary color.", "output": "Blue"},
]
TEST = [{"instruction": "Capital of France?", "output": "Paris"}]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    folder = tmp_path / "ds"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(TRAIN), "test": datasets.Dataset.from_list(TEST)}
    ).save_to_disk(str(folder))
    return folder


def invoke(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def instructions(path: Path) -> list[str]:
    return [r["instruction"] for r in json.loads(path.read_text(encoding="utf-8"))]


def test_run_reads_a_saved_split(tmp_path: Path, saved: Path) -> None:
    out = tmp_path / "out.json"
    pack = write_pack(tmp_path / "pack")
    res = invoke("run", f"{saved}:test", "-o", out, "--backend", "fake", "--pack", pack)
    assert res.exit_code in (0, 1), res.output  # 1: a fake answer may fail a stage
    assert "no such file" not in res.output
    written = instructions(out) if out.exists() else []
    failures = tmp_path / "out.failures.jsonl"
    failed = failures.read_text(encoding="utf-8").splitlines() if failures.exists() else []
    assert len(written) + len(failed) == len(TEST)  # the test split, not train


def test_classify_reads_a_saved_split(tmp_path: Path, saved: Path) -> None:
    out = tmp_path / "typed.json"
    res = invoke("classify", f"{saved}:train", "-o", out, "--backend", "fake")
    assert res.exit_code == 0, res.output
    assert instructions(out) == [r["instruction"] for r in TRAIN]


def test_judge_reads_a_saved_split(tmp_path: Path, saved: Path) -> None:
    out = tmp_path / "scores.json"
    res = invoke(
        "judge", f"{saved}:train", "-o", out, "--aspects", "readability", "--backend", "fake"
    )
    assert res.exit_code == 0, res.output
    scores = json.loads(out.read_text(encoding="utf-8"))
    assert [u["instruction"] for u in scores["units"]] == [r["instruction"] for r in TRAIN]


def test_a_missing_input_is_still_named(tmp_path: Path) -> None:
    for cmd in ("run", "classify", "judge"):
        res = invoke(cmd, tmp_path / "nope:train", "-o", tmp_path / "o.json", "--backend", "fake")
        assert res.exit_code == 2 and "nope:train: no such file" in res.output, (cmd, res.output)
