"""OpenAI Batch API: half-price answers within 24 h, delivered into the request cache.

Flow: `submit_batch` writes one JSONL line per distinct uncached request (`custom_id` = the
request's cache key), uploads it (Files API, purpose "batch"), creates the batch, and saves the
job in `$REALIGN_HOME/batches/<batch id>.json` with a local copy of the input lines.
`refresh` polls the batch; `collect_job` downloads the output file, stores each answer in the
cache under its `custom_id` (so rerunning `realign run` finds every answer there and pays
nothing twice), and resubmits only the failed or expired requests as a new batch.

State is on disk, so `realign batch status` / `realign batch collect` work after the process
that submitted has exited. The API key is read from the environment, never stored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from realign.config import realign_home
from realign.llm.base import ChatRequest, ChatResponse, Usage
from realign.llm.cache import Cache

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


class BatchError(RuntimeError):
    """A batch that cannot be submitted, read or collected; the message says which and why."""


class BatchJob(BaseModel):
    batch_id: str
    model: str
    base_url: str | None = None
    input_file_id: str
    status: str = "validating"
    created_at: float = Field(default_factory=time.time)
    stages: dict[str, str] = Field(default_factory=dict)  # custom_id -> stage
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)  # total / completed / failed
    collected: int = 0
    failed_ids: list[str] = Field(default_factory=list)
    resubmitted_as: str | None = None

    def describe(self) -> str:
        c = self.counts
        line = (
            f"{self.batch_id}  {self.status:<11} {self.model}  "
            f"{c.get('completed', 0)}/{c.get('total', len(self.stages))} done, "
            f"{c.get('failed', 0)} failed"
        )
        if self.collected:
            line += f", {self.collected} collected"
        if self.resubmitted_as:
            line += f", failures resubmitted as {self.resubmitted_as}"
        return line


class CollectReport(BaseModel):
    batch_id: str
    status: str
    collected: int = 0
    failed: int = 0
    resubmitted_as: str | None = None
    still_running: bool = False

    def __str__(self) -> str:
        if self.still_running:
            return f"{self.batch_id}: still {self.status}; collect again later (`realign batch status`)"
        out = f"{self.batch_id}: {self.status}, {self.collected} answers stored in the cache"
        if self.failed:
            out += f", {self.failed} failed or expired"
            out += (
                f" (resubmitted as {self.resubmitted_as})"
                if self.resubmitted_as
                else " (not resubmitted)"
            )
        return out + ". Rerun the same `realign run` command to use them."


# ---------------------------------------------------------------- pure functions


def batch_line(custom_id: str, request: ChatRequest, model: str) -> dict[str, Any]:
    """One JSONL line of the Batch API input for a chat completion."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.model_dump() for m in request.messages],
        "temperature": request.temperature,
    }
    if request.n != 1:
        body["n"] = request.n
    if request.max_tokens is not None:
        body["max_completion_tokens"] = request.max_tokens
    if request.json_schema is not None:
        # The same strict schema the live OpenAI backend sends, so answers validate the same.
        from realign.llm.openai_schemas import strict_schema, tool_schema

        schema = tool_schema(request.json_schema, request.schema_name or "Output")
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": schema["title"],
                "schema": strict_schema(schema),
                "strict": True,
            },
        }
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def parse_output_line(line: str) -> tuple[str, ChatResponse | None, str]:
    """(custom_id, response or None, error text) from one line of an output or error file."""
    row = json.loads(line)
    cid = row.get("custom_id", "")
    if row.get("error"):
        err = row["error"]
        return cid, None, f"{err.get('code', 'error')}: {err.get('message', '')}"
    resp = row.get("response") or {}
    status = resp.get("status_code")
    body = resp.get("body") or {}
    if status != 200:
        message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
        return cid, None, f"HTTP {status}: {message}"
    texts = [(c.get("message") or {}).get("content") or "" for c in body.get("choices", [])]
    usage = body.get("usage") or {}
    return (
        cid,
        ChatResponse(
            texts=texts,
            finish_reasons=[c.get("finish_reason") for c in body.get("choices", [])],
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            ),
        ),
        "",
    )


# ---------------------------------------------------------------- state on disk


def batches_dir() -> Path:
    return realign_home() / "batches"


def _state_path(batch_id: str) -> Path:
    return batches_dir() / f"{batch_id}.json"


def _input_path(batch_id: str) -> Path:
    return batches_dir() / f"{batch_id}.input.jsonl"


def save_job(job: BatchJob) -> None:
    path = _state_path(job.batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(job.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves half a state file


def load_job(batch_id: str) -> BatchJob:
    path = _state_path(batch_id)
    if not path.is_file():
        raise BatchError(f"{path}: no such batch job (see `realign batch status`)")
    try:
        return BatchJob.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BatchError(f"{path}: unreadable batch state: {e}") from e


def list_jobs(batch_id: str | None = None) -> list[BatchJob]:
    if batch_id is not None:
        return [load_job(batch_id)]
    d = batches_dir()
    if not d.is_dir():
        return []
    return [load_job(p.name.removesuffix(".json")) for p in sorted(d.glob("*.json"))]


# ---------------------------------------------------------------- API calls (the edge)


def _client(base_url: str | None) -> Any:
    import openai

    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise BatchError("the Batch API needs OPENAI_API_KEY in the environment")
    return openai.OpenAI(api_key=key, base_url=base_url, max_retries=3)


def submit_batch(
    requests: Iterable[ChatRequest],
    *,
    model: str,
    backend_id: str,
    base_url: str | None = None,
    client: Any = None,
) -> BatchJob | None:
    """Submit every distinct request as one batch; None when there is nothing to send."""
    lines: dict[str, str] = {}
    stages: dict[str, str] = {}
    for req in requests:
        cid = req.cache_key(backend_id)
        if cid not in lines:
            lines[cid] = json.dumps(batch_line(cid, req, model), ensure_ascii=False)
            stages[cid] = req.stage
    if not lines:
        return None
    return _submit_lines(lines, stages, model=model, base_url=base_url, client=client)


def _submit_lines(
    lines: dict[str, str],
    stages: dict[str, str],
    *,
    model: str,
    base_url: str | None,
    client: Any,
) -> BatchJob:
    import openai

    client = client or _client(base_url)
    payload = ("\n".join(lines.values()) + "\n").encode("utf-8")
    try:
        uploaded = client.files.create(file=("realign-batch.jsonl", payload), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint=ENDPOINT,
            completion_window="24h",
            metadata={"created_by": "realign"},
        )
    except openai.OpenAIError as e:
        raise BatchError(f"submitting the batch failed: {type(e).__name__}: {e}") from e
    job = BatchJob(
        batch_id=batch.id,
        model=model,
        base_url=base_url,
        input_file_id=uploaded.id,
        status=batch.status,
        stages=stages,
    )
    batches_dir().mkdir(parents=True, exist_ok=True)
    _input_path(job.batch_id).write_bytes(payload)
    save_job(job)
    return job


def refresh(job: BatchJob, client: Any = None) -> BatchJob:
    """The job with the batch's current status, counts and file ids (saved)."""
    import openai

    if job.status in TERMINAL and job.collected:
        return job
    client = client or _client(job.base_url)
    try:
        b = client.batches.retrieve(job.batch_id)
    except openai.OpenAIError as e:
        raise BatchError(f"{job.batch_id}: cannot read the batch: {type(e).__name__}: {e}") from e
    job.status = b.status
    job.output_file_id = b.output_file_id
    job.error_file_id = b.error_file_id
    if b.request_counts is not None:
        job.counts = {
            "total": b.request_counts.total,
            "completed": b.request_counts.completed,
            "failed": b.request_counts.failed,
        }
    save_job(job)
    return job


def collect_job(
    job: BatchJob, *, cache: Cache | None = None, resubmit: bool = True, client: Any = None
) -> CollectReport:
    """Store a finished batch's answers in the cache; resubmit failed or expired requests."""
    client = client or _client(job.base_url)
    job = refresh(job, client)
    if job.status not in TERMINAL:
        return CollectReport(batch_id=job.batch_id, status=job.status, still_running=True)
    own_cache = cache is None
    if cache is None:  # not `cache or Cache()`: an empty cache is falsy (it has __len__)
        cache = Cache()
    try:
        answered: set[str] = set()
        errors: dict[str, str] = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            text = client.files.content(file_id).text
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    cid, resp, err = parse_output_line(line)
                except (ValueError, KeyError) as e:
                    raise BatchError(f"{job.batch_id}: file {file_id} line {n}: {e}") from e
                if cid not in job.stages:
                    continue  # not ours (should not happen): never write foreign keys
                if resp is not None:
                    cache.set(cid, resp.model_dump_json(), stage=job.stages[cid])
                    answered.add(cid)
                else:
                    errors[cid] = err
    finally:
        if own_cache:
            cache.close()
    # Expired or cancelled batches leave some requests in neither file: they failed too.
    failed = [cid for cid in job.stages if cid not in answered]
    job.collected = len(answered)
    job.failed_ids = failed
    report = CollectReport(
        batch_id=job.batch_id, status=job.status, collected=len(answered), failed=len(failed)
    )
    if failed and resubmit:
        lines = _input_lines(job.batch_id)
        missing = [cid for cid in failed if cid not in lines]
        if missing:
            raise BatchError(
                f"{_input_path(job.batch_id)}: the input lines of {len(missing)} failed "
                "requests are missing; rerun `realign run --batch` to resubmit them"
            )
        new = _submit_lines(
            {cid: lines[cid] for cid in failed},
            {cid: job.stages[cid] for cid in failed},
            model=job.model,
            base_url=job.base_url,
            client=client,
        )
        job.resubmitted_as = report.resubmitted_as = new.batch_id
    save_job(job)
    return report


def _input_lines(batch_id: str) -> dict[str, str]:
    path = _input_path(batch_id)
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out[json.loads(line)["custom_id"]] = line
    return out
