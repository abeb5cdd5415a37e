"""The one async engine every LLM and search call goes through.

Stages call `Engine.structured(request, Schema)` (LLM, validated pydantic output, re-asked with
the validation error a bounded number of times) or `Engine.call(kind, key, fn)` (anything else,
e.g. a search request, cached under `key`). The engine owns concurrency, caching, retries and
accounting, so stages stay pure functions of their inputs plus these calls.

NOTE: this is the minimal version the stages are written against; the scale issue grows it
(rate limits, AIMD on 429, circuit breaker, cost cap) without changing these signatures.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from realign.llm.base import Backend, BackendError, ChatRequest, ChatResponse, Message

T = TypeVar("T", bound=BaseModel)


class StructuredOutputError(RuntimeError):
    """The model's output never validated against the schema; carries the last raw output."""

    def __init__(self, message: str, raw_output: str) -> None:
        super().__init__(message)
        self.raw_output = raw_output


@dataclass
class EngineStats:
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    rate_limited: int = 0
    errors: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_stage: dict[str, int] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        backend: Backend,
        *,
        concurrency: int = 8,
        max_retries: int = 4,
        reask: int = 2,
        cache: Any | None = None,  # realign.cache.Cache
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.max_retries = max_retries
        self.reask = reask
        self._sem = asyncio.Semaphore(concurrency)
        self.stats = EngineStats()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        key = request.cache_key(self.backend.backend_id)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                resp = ChatResponse.model_validate_json(hit)
                resp.cached = True
                return resp
        attempt = 0
        while True:
            try:
                async with self._sem:
                    self.stats.requests += 1
                    self.stats.by_stage[request.stage] = self.stats.by_stage.get(request.stage, 0) + 1
                    resp = await self.backend.chat(request)
                break
            except BackendError as e:
                if e.status == 429:
                    self.stats.rate_limited += 1
                if not e.retryable or attempt >= self.max_retries:
                    self.stats.errors += 1
                    raise
                attempt += 1
                self.stats.retries += 1
                await asyncio.sleep(e.retry_after if e.retry_after is not None else 0.5 * 2**attempt)
        self.stats.prompt_tokens += resp.usage.prompt_tokens
        self.stats.completion_tokens += resp.usage.completion_tokens
        if self.cache is not None:
            self.cache.set(key, resp.model_dump_json())
        return resp

    async def structured(self, request: ChatRequest, schema: type[T]) -> list[T]:
        """`request.n` validated outputs; invalid ones are re-asked with the validation error."""
        request = request.model_copy(
            update={"json_schema": schema.model_json_schema(), "schema_name": schema.__name__}
        )
        out: list[T] = []
        last_raw = ""
        last_err = ""
        for attempt in range(self.reask + 1):
            need = request.n - len(out)
            req = request if attempt == 0 else _reask(request, last_raw, last_err, need)
            resp = await self.chat(req)
            for text in resp.texts[:need]:
                try:
                    out.append(schema.model_validate(json.loads(text)))
                except (ValidationError, json.JSONDecodeError) as e:
                    last_raw, last_err = text, _short_error(e)
            if len(out) >= request.n:
                return out
            self.stats.reasks += 1
        raise StructuredOutputError(
            f"{request.stage}: output did not match {schema.__name__} after "
            f"{self.reask + 1} attempts: {last_err}",
            raw_output=last_raw,
        )

    async def call(self, kind: str, key: str, fn: Callable[[], Awaitable[str]]) -> str:
        """A non-LLM call (e.g. a search) cached under `key` and bounded by the engine."""
        full_key = f"{kind}:{key}"
        if self.cache is not None:
            hit = self.cache.get(full_key)
            if hit is not None:
                self.stats.cache_hits += 1
                return hit
        async with self._sem:
            self.stats.by_stage[kind] = self.stats.by_stage.get(kind, 0) + 1
            out = await fn()
        if self.cache is not None:
            self.cache.set(full_key, out)
        return out

    async def aclose(self) -> None:
        await self.backend.aclose()


def _short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()
        )
    return f"not valid JSON: {e}"


def _reask(request: ChatRequest, raw: str, error: str, n: int) -> ChatRequest:
    """The same request plus the bad answer and what was wrong with it."""
    msgs = [
        *request.messages,
        Message(role="assistant", content=raw[:4000]),
        Message(
            role="user",
            content=f"That answer was not valid: {error}. Reply again with only a JSON object "
            "that matches the schema.",
        ),
    ]
    return request.model_copy(update={"messages": msgs, "n": n})
