"""The one async engine every LLM and search call goes through.

Stages call `Engine.structured(request, Schema)` (LLM, validated pydantic output, re-asked with
the validation error a bounded number of times), `Engine.chat(request)` (raw texts) or
`Engine.call(kind, key, fn)` (anything else, e.g. a search request, cached under `key`). The
engine owns everything between a stage and the provider, so stages stay pure functions of their
inputs plus these calls. For each LLM request, in order:

1. cache: an answer stored under `request.cache_key(backend_id)` is returned, never re-paid;
   identical requests in flight at the same time are sent once (single flight). `structured`
   stores its answers only once they validated, and drops cached answers that do not, so a
   rerun asks again for every record whose output never fitted the schema;
2. stop conditions: an open circuit breaker raises `CircuitOpen`; a request whose estimated
   cost would take the spend past `max_cost` raises `BudgetExceeded` (both: clean, resumable);
3. concurrency: at most `concurrency` requests in flight (default 32, sized for hosted APIs:
   at 2–5 s per request that is 400–900 requests/min, about an OpenAI tier-1 key's limit),
   cut in half on a 429 when no RPM/TPM limit is known and grown back by one per window of
   successes (AIMD);
4. pacing: requests/min and tokens/min (estimated with tiktoken: prompt + `max_tokens` or the
   stage's output estimate) from `rpm`/`tpm`, replaced by the provider's `x-ratelimit-*`
   headers when it sends them (no limit known: the first request goes alone to learn them); a
   429's `retry-after` pauses every sender;
5. the call, under a per-request timeout; 429s, 5xx, timeouts and connection errors are
   retried with exponential backoff and full jitter (`BackendError.retryable`);
6. accounting: tokens, dollars (`realign.llm.pricing`), 429s, retries, cache hits → `stats`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from realign import tokens
from realign.llm.base import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    as_backend_error,
    describe,
    endpoint_fault,
    for_record,
)
from realign.llm.pricing import Price, PriceTable, load_prices
from realign.llm.ratelimit import (
    AdaptiveLimit,
    CircuitBreaker,
    CircuitOpen,
    FirstAnswerGate,
    Pacer,
    retry_after_seconds,
)
from realign.llm.structured import OutputTruncated, StructuredOutputError, structured_output

__all__ = [
    "BudgetExceeded",
    "CircuitOpen",
    "Deferred",
    "Engine",
    "EngineStats",
    "OutputTruncated",
    "RequestFailed",
    "StructuredOutputError",
]

T = TypeVar("T", bound=BaseModel)
log = logging.getLogger("realign.llm.engine")

DEFAULT_CONCURRENCY = 32
# Output tokens assumed per request when `max_tokens` is not set (rate limiting and budget).
DEFAULT_OUTPUT_ESTIMATE = {"classify": 64, "judge": 256, "query": 64, "rewrite": 1024}
_FALLBACK_OUTPUT_ESTIMATE = 512


class BudgetExceeded(RuntimeError):
    """Sending the next request could pass `max_cost`: stop cleanly (the run is resumable)."""


class Deferred(RuntimeError):
    """Batch mode: the request was queued for the Batch API instead of sent (not a failure)."""


class RequestFailed(BackendError):
    """A request that failed for good (not retryable, or out of retries); says which and why."""


@dataclass
class EngineStats:
    requests: int = 0  # HTTP requests sent (retries included)
    completed: int = 0  # LLM requests answered by the backend
    cache_hits: int = 0
    coalesced: int = 0  # identical requests that waited for one in flight instead of sending
    retries: int = 0
    rate_limited: int = 0  # 429s received
    timeouts: int = 0
    errors: int = 0  # requests that failed for good
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_stage: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    concurrency_limit: float = 0.0

    @property
    def elapsed_s(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s

    def summary(self) -> str:
        """One line for the progress bar."""
        return (
            f"${self.cost_usd:,.4f} · {self.requests_per_s:,.1f} req/s · "
            f"{self.rate_limited} 429s · {self.retries} retries · {self.cache_hits} cached"
        )


class Engine:
    def __init__(
        self,
        backend: Backend | None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_retries: int = 4,
        reask: int = 2,
        cache: Any | None = None,  # realign.llm.cache.Cache (anything with get/set/delete)
        rpm: float | None = None,
        tpm: float | None = None,
        request_timeout: float = 120.0,
        max_cost: float | None = None,
        prices: PriceTable | None = None,
        batch_pricing: bool = False,
        output_estimate: dict[str, int] | None = None,
        max_rate_limit_retries: int = 50,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        breaker_window: int = 50,
        breaker_threshold: float = 0.5,
        defer_to: list[ChatRequest] | None = None,
    ) -> None:
        # None: a search-only engine (`realign retrieve`): `call` works, LLM requests raise.
        self._backend = backend
        self.cache = cache
        # Batch mode (`realign run --batch`): cache misses are appended here for
        # `realign.llm.batch.submit_batch` and raise Deferred instead of being sent.
        self.defer_to = defer_to
        self.max_retries = max_retries
        self.reask = reask
        self.request_timeout = request_timeout
        self.max_cost = max_cost
        self.batch_pricing = batch_pricing
        self.output_estimate = {**DEFAULT_OUTPUT_ESTIMATE, **(output_estimate or {})}
        self.max_rate_limit_retries = max_rate_limit_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.limit = AdaptiveLimit(concurrency)
        self.pacer = Pacer(rpm=rpm, tpm=tpm)
        self.first_answer = FirstAnswerGate()
        self.breaker = CircuitBreaker(window=breaker_window, threshold=breaker_threshold)
        model = backend.model if backend is not None else ""
        self.price: Price | None = (prices or load_prices()).lookup(model) if model else None
        if max_cost is not None and self.price is None:
            raise ValueError(
                f"--max-cost needs a price for model {model!r}: add it to "
                "$REALIGN_HOME/prices.yaml or pass --prices FILE"
            )
        self.stats = EngineStats(concurrency_limit=self.limit.limit)
        self._reserved_usd = 0.0  # estimated cost of requests in flight
        self._budget_hit: str | None = None
        self._stage_cost: dict[str, tuple[int, float]] = {}  # stage -> (answers, dollars)
        self._pending: dict[str, asyncio.Future[ChatResponse]] = {}

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise BackendError("this engine has no LLM backend (a search-only run)")
        return self._backend

    @property
    def has_backend(self) -> bool:
        return self._backend is not None

    # ------------------------------------------------------------------ LLM calls

    async def chat(self, request: ChatRequest, *, store: bool = True) -> ChatResponse:
        """The answer to `request`, from the cache or the backend. `store=False`: the caller
        stores it (`store`) once it knows the answer is usable."""
        self.breaker.check()
        key = request.cache_key(self.backend.backend_id)
        if self.cache is not None:
            hit = await self._cache_get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                resp = ChatResponse.model_validate_json(hit)
                resp.cached = True
                return resp
        if self.defer_to is not None:
            self.defer_to.append(request)
            raise Deferred(f"{request.stage}{for_record(request)}: queued for the Batch API")
        pending = self._pending.get(key)
        if pending is not None:
            self.stats.coalesced += 1
            return (await asyncio.shield(pending)).model_copy()
        fut: asyncio.Future[ChatResponse] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            resp = await self._send(request)
        except BaseException as e:
            if isinstance(e, Exception):
                fut.set_exception(e)
                fut.exception()  # mark retrieved: nobody may be waiting
            else:
                fut.cancel()
            raise
        else:
            fut.set_result(resp)
        finally:
            del self._pending[key]
        resp._asked = (request, key)
        if store:
            self.store(request, resp)
        return resp

    def store(self, request: ChatRequest, resp: ChatResponse) -> None:
        """Cache `resp` as the answer to `request` (no-op without a cache or when it came from
        there)."""
        if self.cache is None or resp.cached:
            return
        asked = resp._asked
        key = (
            asked[1]
            if asked is not None and asked[0] is request
            else request.cache_key(self.backend.backend_id)
        )
        stored = resp.model_copy(update={"headers": {}})  # rate-limit headers are not answers
        self.cache.set(key, stored.model_dump_json(), stage=request.stage)

    def forget(self, request: ChatRequest) -> None:
        """Drop the cached answer to `request`, so the next time it is asked it is sent."""
        if self.cache is not None:
            self.cache.delete(request.cache_key(self.backend.backend_id))

    async def _send(self, request: ChatRequest) -> ChatResponse:
        """One logical request: pacing, retries, accounting. Raises RequestFailed when done trying."""
        attempt = 0  # failures other than 429
        throttled = 0  # 429s
        while True:
            self.breaker.check()
            ticket = await self.limit.acquire()
            probe = False
            est_in = est_out = 0
            est_usd = 0.0
            self.stats.in_flight += 1
            try:
                # Everything below is decided once we hold a slot: while we waited, the breaker
                # may have opened or the provider's limits may have become known.
                self.breaker.check()
                if not self.first_answer.opened and not self.pacer.has_limits:
                    probe = await self.first_answer.enter()
                est_in, est_out = self._estimate_tokens(request)
                est_usd = self._reserve_budget(request, est_in, est_out)
                await self.pacer.acquire(est_in + est_out)
                self.stats.requests += 1
                self.stats.by_stage[request.stage] = self.stats.by_stage.get(request.stage, 0) + 1
                # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the call in a task of
                # its own (~30 µs a request at hundreds of requests/s).
                async with asyncio.timeout(self.request_timeout):
                    resp = await self.backend.chat(request)
            except (BackendError, TimeoutError, OSError) as exc:
                err = as_backend_error(exc, self.request_timeout)
                if err.status == 429:
                    self.stats.rate_limited += 1
                    self.pacer.throttled(est_in + est_out, err.headers)
                    if not self.pacer.has_limits:
                        # Overload without known rate limits (a saturated server): AIMD.
                        # With RPM/TPM known the pacer sets the pace; cutting concurrency too
                        # would starve long requests for minutes while it grows back.
                        self.limit.on_overload(ticket)
                if isinstance(exc, TimeoutError):
                    self.stats.timeouts += 1
                failure: BackendError | None = err
            else:
                failure = None
            finally:
                if probe:
                    self.first_answer.answered()
                self.limit.release(ticket)
                self.stats.in_flight -= 1
                self._reserved_usd -= est_usd
                self.stats.concurrency_limit = self.limit.limit

            if failure is None:
                self.limit.on_success()
                self.breaker.record(False)
                # No refund of unused max_tokens: providers charge the limit on arrival with
                # prompt + max_tokens and do not give back what the answer did not use.
                self.pacer.observe(resp.headers)
                self._account(request, resp)
                if self.limit.has_waiters:
                    # Our slot went to a waiting request: let it reach the provider before we
                    # spend CPU on this answer (validation, filter, state), which would otherwise
                    # keep the provider's freed slot idle for the whole burst of answers.
                    await asyncio.sleep(0)
                return resp

            # A 429 is the provider pacing us, not a failure of the endpoint.
            is_429 = failure.status == 429
            if not is_429 and endpoint_fault(failure):
                self.breaker.record(True, describe(failure))
            if is_429:
                throttled += 1
                out_of_tries = throttled > self.max_rate_limit_retries
            else:
                attempt += 1
                out_of_tries = attempt > self.max_retries
            if not failure.retryable or out_of_tries:
                self.stats.errors += 1
                tries = attempt + throttled
                raise RequestFailed(
                    f"{request.stage} request{for_record(request)} failed after {tries} "
                    f"attempt{'s' if tries != 1 else ''}: {describe(failure)}",
                    status=failure.status,
                    retryable=False,
                    headers=failure.headers,
                ) from failure
            self.stats.retries += 1
            wait = failure.retry_after or retry_after_seconds(failure.headers)
            if wait is None:
                # Full jitter: spreads the retries of many failed requests over the window.
                tries = min(throttled, 8) if is_429 else attempt
                wait = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**tries))
            if is_429:
                self.pacer.pause(wait)  # everyone backs off, not only this request
            log.debug(
                "retrying %s%s in %.2fs: %s",
                request.stage,
                for_record(request),
                wait,
                describe(failure),
            )
            await asyncio.sleep(wait)

    def _estimate_tokens(self, request: ChatRequest) -> tuple[int, int]:
        """(prompt, output) tokens as a provider's rate limiter counts them on arrival: the
        messages' text plus `max_tokens` (or the stage's estimate) per choice. 0s when neither
        pacing nor budget need them (counting costs ~50 µs per request)."""
        if not self.pacer.counts_tokens and self.max_cost is None:
            return 0, 0
        prompt = sum(tokens.count(m.content) for m in request.messages)
        out = request.max_tokens or self.output_estimate.get(
            request.stage, _FALLBACK_OUTPUT_ESTIMATE
        )
        return prompt, out * request.n

    def _reserve_budget(self, request: ChatRequest, est_in: int, est_out: int) -> float:
        if self.max_cost is None or self.price is None:
            return 0.0
        if self._budget_hit is not None:
            raise BudgetExceeded(self._budget_hit)
        # Billing also counts the output schema and per-message framing.
        schema = tokens.count(json.dumps(request.json_schema)) if request.json_schema else 0
        est_in += schema + 4 * len(request.messages) + 3
        est = self.price.cost(est_in, est_out, batch=self.batch_pricing)
        # Token estimates miss when max_tokens is unset: never assume less than this stage's
        # average so far.
        done, spent = self._stage_cost.get(request.stage, (0, 0.0))
        if done:
            est = max(est, spent / done)
        if self.stats.cost_usd + self._reserved_usd + est > self.max_cost:
            self._budget_hit = (
                f"--max-cost ${self.max_cost:,.2f} reached: spent ${self.stats.cost_usd:,.4f}, "
                f"${self._reserved_usd:,.4f} in flight, next {request.stage} request "
                f"~${est:,.4f}; rerun with a higher --max-cost to continue"
            )
            raise BudgetExceeded(self._budget_hit)
        self._reserved_usd += est
        return est

    def _account(self, request: ChatRequest, resp: ChatResponse) -> None:
        self.stats.completed += 1
        self.stats.prompt_tokens += resp.usage.prompt_tokens
        self.stats.completion_tokens += resp.usage.completion_tokens
        if self.price is not None:
            usd = self.price.cost(
                resp.usage.prompt_tokens, resp.usage.completion_tokens, batch=self.batch_pricing
            )
            self.stats.cost_usd += usd
            done, spent = self._stage_cost.get(request.stage, (0, 0.0))
            self._stage_cost[request.stage] = (done + 1, spent + usd)

    async def structured(
        self,
        request: ChatRequest,
        schema: type[T],
        *,
        raise_truncated: bool = False,
        finish_reasons: list[str | None] | None = None,
    ) -> list[T]:
        """`request.n` outputs validated by `schema`, invalid ones re-asked with the validation
        error (`realign.llm.structured.structured_output` says how, and what is cached)."""
        return await structured_output(
            self, request, schema, raise_truncated=raise_truncated, finish_reasons=finish_reasons
        )

    # ------------------------------------------------------------------ other calls

    async def call(self, kind: str, key: str, fn: Callable[[], Awaitable[str]]) -> str:
        """A non-LLM call (e.g. a search) cached under `key` and bounded by the engine."""
        self.breaker.check()
        full_key = f"{kind}:{key}"
        if self.cache is not None:
            hit = await self._cache_get(full_key)
            if hit is not None:
                self.stats.cache_hits += 1
                return hit
        ticket = await self.limit.acquire()
        try:
            self.stats.by_stage[kind] = self.stats.by_stage.get(kind, 0) + 1
            out = await fn()
        finally:
            self.limit.release(ticket)
        if self.cache is not None:
            self.cache.set(full_key, out, stage=kind)
        return out

    async def _cache_get(self, key: str) -> str | None:
        # A cache in another process (`--engine ray`'s shared cache) answers without blocking
        # the event loop: it has `aget`. The local SQLite cache answers in microseconds.
        aget = getattr(self.cache, "aget", None)
        if aget is not None:
            return await aget(key)  # type: ignore[no-any-return]
        return self.cache.get(key)  # type: ignore[no-any-return, union-attr]

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()
