"""`realign run --batch`: each run submits what the next stage needs to the Batch API, and a
rerun after the answers are collected goes on, until the output is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packs import write_pack
from typer.testing import CliRunner

from realign.cli.main import app
from realign.llm.base import ChatResponse
from realign.llm.batch import _input_path, list_jobs
from realign.llm.cache import Cache

runner = CliRunner()


@pytest.fixture(scope="module")
def vcr_config() -> dict:
    # Multipart uploads carry a random boundary: match on everything but the body.
    return {
        "filter_headers": ["authorization"],
        "match_on": ["method", "scheme", "host", "port", "path", "query"],
    }


def answer(stage: str, body: dict) -> str:
    if stage == "classify":
        return json.dumps({"reason": "asks for a fact", "task_type": "open_qa"})
    prompt = body["messages"][-1]["content"]
    original = prompt.split("<response>")[1].split("</response>")[0].strip()
    return json.dumps(
        {
            "reasoning": "lead with the answer",
            "format_fits": True,
            "response": f"**Answer:** {original}\n\nThat is the short of it.",
        }
    )


def collect_by_hand(job_id: str, stages: dict[str, str]) -> None:
    """What `realign batch collect` does with a completed batch: answers into the cache."""
    cache = Cache()
    for line in _input_path(job_id).read_text().splitlines():
        req = json.loads(line)
        text = answer(stages[req["custom_id"]], req["body"])
        cache.set(req["custom_id"], ChatResponse(texts=[text]).model_dump_json())
    cache.close()


@pytest.mark.vcr
def test_run_batch_advances_one_stage_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch-0123456789")
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"Who wrote book {i}?",
                    "input": "",
                    "output": f"Author {i} wrote book {i}.",
                }
            )
            + "\n"
            for i in range(3)
        )
    )
    out = tmp_path / "out.jsonl"
    cmd = [
        "run",
        str(src),
        "-o",
        str(out),
        "--batch",
        "--model",
        "gpt-4o-mini",
        "--pack",
        str(write_pack(tmp_path / "pack")),
    ]

    first = runner.invoke(app, cmd)
    assert first.exit_code == 3, first.output
    assert "batch_abc123" in first.output and not out.exists()
    (job,) = list_jobs()
    assert sorted(job.stages.values()) == ["classify"] * 3
    collect_by_hand(job.batch_id, job.stages)

    second = runner.invoke(app, cmd)  # classify answers come from the cache; rewrites queue
    assert second.exit_code == 3, second.output
    job = load_latest_rewrite_job()
    assert sorted(job.stages.values()) == ["rewrite"] * 3
    collect_by_hand(job.batch_id, job.stages)

    third = runner.invoke(app, cmd)  # everything from the cache: the output is written
    assert third.exit_code == 0, third.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["realign"]["status"] for r in rows] == ["rewritten"] * 3
    assert rows[0]["output"].startswith("**Answer:** Author 0")


def load_latest_rewrite_job():
    jobs = [j for j in list_jobs() if "rewrite" in j.stages.values()]
    assert len(jobs) == 1
    return jobs[0]
