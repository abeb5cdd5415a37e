"""`realign rephrase | generate | filter` against the real llama.cpp server (SmolLM2-135M),
through the command line and `--base-url`, replayed from cassettes.

Recorded with `.venv/bin/python scripts/record_cassettes.py --port 8767 tests/test_augment_llama.py`
(see cassettes/README.md). A 135M model writes poor rephrasings, pairs and grades: these tests
check the wiring (backend resolution from `--base-url`, prompts, grammar-constrained JSON,
parsing, the output files), not the quality of what it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from realign.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LLAMA = ["--base-url", "http://127.0.0.1:8767/v1", "--model", "smollm2-135m-instruct"]


@pytest.fixture(scope="module")
def vcr_config(vcr_config: dict[str, Any]) -> dict[str, Any]:
    # Without `record_mode` here, `--record-mode=rewrite` from the recording script applies.
    return {k: v for k, v in vcr_config.items() if k != "record_mode"}


def run(*args: object) -> Any:
    res = CliRunner().invoke(app, [*(str(a) for a in args), *LLAMA, "--concurrency", "1"])
    assert res.exit_code == 0, res.output
    return res


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.vcr
def test_llama_rephrase_one_chunk_easy(tmp_path: Path) -> None:
    out = tmp_path / "wrap.jsonl"
    run("rephrase", EXAMPLES / "docs" / "sourdough.md", "-o", out, "--styles", "easy")
    (line,) = read_jsonl(out)
    assert (line["id"], line["doc_id"], line["chunk"], line["style"]) == (
        "sourdough.md:0:easy", "sourdough.md", 0, "easy",
    )  # fmt: skip
    assert line["text"].strip() and line["source_text"].startswith("# How sourdough rises")


@pytest.mark.vcr
def test_llama_generate_pairs_from_one_chunk(tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    run(
        "generate", EXAMPLES / "docs" / "binary-search.txt", "-o", out, "--per-chunk", "2",
        "--output-format", "sharegpt",
    )  # fmt: skip
    got = read_jsonl(out)
    dups = tmp_path / "pairs.duplicates.jsonl"
    n_dups = len(read_jsonl(dups)) if dups.exists() else 0
    assert 1 <= len(got) + n_dups <= 2
    for rec in got:
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and human["value"].strip()
        assert gpt["from"] == "gpt" and gpt["value"].strip()
        assert rec["realign"]["generated"]["doc_id"] == "binary-search.txt"


@pytest.mark.vcr
def test_llama_filter_educational_value(tmp_path: Path) -> None:
    out = tmp_path / "good.json"
    res = run(
        "filter", EXAMPLES / "realign_items.json", "-o", out, "--limit", "2", "--min-score", "5",
    )  # fmt: skip
    kept = json.loads(out.read_text(encoding="utf-8"))
    dropped = read_jsonl(tmp_path / "good.dropped.jsonl")
    assert len(kept) + len(dropped) == 2  # nothing vanishes
    for rec in [*kept, *dropped]:
        score = rec["realign"]["scores"]["educational_value"]
        assert 1 <= score["score"] <= 10
        assert rec["realign"]["quality_filter"]["kept"] is (score["score"] >= 5)
    assert all(r["realign"]["scores"]["educational_value"]["score"] >= 5 for r in kept)
    assert "total" in res.output
