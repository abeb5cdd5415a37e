"""OpenAI Batch API: submit, poll, collect into the cache, resubmit only what failed.

The cassette is written by hand from the documented Files and Batches formats (it says so at
its top): no OpenAI key exists in this environment to record one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from realign.cli.main import app
from realign.llm.base import ChatRequest, Message
from realign.llm.batch import (
    BatchError,
    batch_line,
    batches_dir,
    collect_job,
    list_jobs,
    load_job,
    parse_output_line,
    refresh,
    submit_batch,
)
from realign.llm.cache import Cache
from realign.llm.engine import Engine
from realign.llm.fake import FakeBackend
from realign.llm.structured import _json_schema

KEY = "sk-test-BATCH-abcdef0123456789"
BACKEND_ID = "openai:https://api.openai.com/v1:gpt-4o-mini:json_schema"


class Verdict(BaseModel):
    label: str
    score: int


@pytest.fixture(scope="module")
def vcr_config() -> dict:
    # Multipart uploads carry a random boundary: match on everything but the body.
    return {
        "filter_headers": ["authorization"],
        "record_mode": "none",
        "match_on": ["method", "scheme", "host", "port", "path", "query"],
    }


def _requests() -> list[ChatRequest]:
    return [
        ChatRequest(
            stage="judge",
            messages=[Message(role="user", content=f"judge {i}")],
            json_schema=_json_schema(Verdict),
            schema_name="Verdict",
            max_tokens=20,
        )
        for i in range(3)
    ]


def test_batch_line_is_a_strict_chat_completion_request() -> None:
    line = batch_line("cid", _requests()[0], "gpt-4o-mini")
    assert line["custom_id"] == "cid" and line["url"] == "/v1/chat/completions"
    body = line["body"]
    assert body["model"] == "gpt-4o-mini" and body["max_completion_tokens"] == 20
    fmt = body["response_format"]["json_schema"]
    assert fmt["strict"] is True and fmt["schema"]["additionalProperties"] is False


def test_parse_output_and_error_lines() -> None:
    ok = {
        "custom_id": "a",
        "response": {
            "status_code": 200,
            "body": {
                "choices": [{"message": {"content": "{}"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            },
        },
    }
    cid, resp, err = parse_output_line(json.dumps(ok))
    assert (
        cid == "a" and resp is not None and resp.texts == ["{}"] and resp.usage.prompt_tokens == 3
    )
    bad = {
        "custom_id": "b",
        "response": None,
        "error": {"code": "batch_expired", "message": "expired"},
    }
    cid, resp, err = parse_output_line(json.dumps(bad))
    assert cid == "b" and resp is None and "batch_expired" in err


@pytest.mark.vcr
def test_submit_collect_and_resubmit_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    reqs = _requests()
    job = submit_batch([*reqs, reqs[0]], model="gpt-4o-mini", backend_id=BACKEND_ID)
    assert job is not None and job.batch_id == "batch_abc123"
    assert len(job.stages) == 3  # the duplicate is sent once
    lines = (batches_dir() / "batch_abc123.input.jsonl").read_text().splitlines()
    assert [json.loads(x)["custom_id"] for x in lines] == [r.cache_key(BACKEND_ID) for r in reqs]

    # Not finished yet: nothing collected, state kept for a later `realign batch collect`.
    cache = Cache(tmp_path / "c.sqlite")
    report = collect_job(load_job("batch_abc123"), cache=cache)
    assert report.still_running and report.status == "in_progress"

    report = collect_job(load_job("batch_abc123"), cache=cache)
    assert report.status == "completed" and report.collected == 2 and report.failed == 1
    assert report.resubmitted_as == "batch_def456"
    saved = load_job("batch_abc123")
    assert saved.failed_ids == [reqs[2].cache_key(BACKEND_ID)]
    assert saved.resubmitted_as == "batch_def456"
    resub = load_job("batch_def456")
    assert list(resub.stages) == [reqs[2].cache_key(BACKEND_ID)]
    assert {j.batch_id for j in list_jobs()} == {"batch_abc123", "batch_def456"}

    # The collected answers are cache hits for the same requests: nothing is paid twice.
    class SameBackend(FakeBackend):
        @property
        def backend_id(self) -> str:
            return BACKEND_ID

    backend = SameBackend(lambda r: '{"label": "live", "score": 1}', model="gpt-4o-mini")
    engine = Engine(backend, cache=cache)
    import asyncio

    first = asyncio.run(engine.structured(reqs[0], Verdict))
    assert first == [Verdict(label="good", score=8)] and backend.calls == []
    asyncio.run(engine.structured(reqs[2], Verdict))
    assert len(backend.calls) == 1  # only the failed one is sent live

    # The key is nowhere on disk.
    for f in [*batches_dir().iterdir(), *tmp_path.iterdir()]:
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_status_without_jobs_and_unknown_job() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["batch", "status"])
    assert out.exit_code == 0 and "no batch jobs" in out.output
    out = runner.invoke(app, ["batch", "collect", "batch_nope"])
    assert out.exit_code == 1 and "batch_nope" in out.output
    with pytest.raises(BatchError, match="no such batch job"):
        load_job("batch_nope")


def test_refresh_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from realign.llm.batch import BatchJob, save_job

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    job = BatchJob(batch_id="batch_x", model="gpt-4o-mini", input_file_id="file-x")
    save_job(job)
    with pytest.raises(BatchError, match="OPENAI_API_KEY"):
        refresh(job)
