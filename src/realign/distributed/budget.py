"""One rate budget for every worker of a Ray run.

The provider's limits (RPM, TPM, how many requests it serves at once) belong to the API key,
not to a process: N workers each pacing to the full limit would send N times too much and
meet a storm of 429s. So the limiter of the local engine (`AdaptiveLimit` for concurrency with
AIMD, `Pacer` for the request and token buckets and the `retry-after` pause) lives once, in a
named async Ray actor (`Budget`), and each worker's `Engine` gets `SharedLimit`/`SharedPacer`
in place of its own: same interface, but they lease from the actor.

Leases are small batches, so the actor sees a few calls per batch of requests rather than
several per request: a worker asks for as many slots as it has requests waiting (at most
`LEASE`), gives slots back a few milliseconds after they are released, together with the count
of successes (AIMD growth), and takes tokens for `PACE_LEASE` requests of the size it is
about to send. A 429 anywhere cuts the shared concurrency (when no RPM/TPM is known), gives the
tokens back and pauses the shared pacer: every worker slows, not only the one that saw it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from realign.llm.ratelimit import AdaptiveLimit, Pacer

# Request slots taken per lease call (a worker takes only as many as it has requests waiting).
# Each call costs the actor a fixed ~2 ms of CPU, so the lease size sets the ceiling of a
# whole Ray run: with 8 the actor spent 0.21-0.34 ms a request (a ceiling near 3,000-4,600
# requests/s on any number of cores), with 32 about 0.08 ms (benchmarks/ray_throughput.py).
LEASE = 32
# Requests' worth of tokens taken per pacing lease. Credit taken early and spent late reaches
# the provider bunched with other workers' requests: 4 workers at an enforced 600k TPM on a
# loaded machine saw 5% 429s with 8, ~1% with 2. Pacing only happens under a known RPM/TPM,
# at most a few hundred requests/s, where one actor call per request costs little.
PACE_LEASE = 1
RETURN_AFTER_S = 0.005  # released slots are given back in batches after this delay
RECLAIM_MIN_S = 1.0  # a dead worker's slots are held at least this long (`Budget.reclaim`)


class Budget:
    """The shared state; run as a named async Ray actor (`budget_actor`), or directly in tests."""

    def __init__(
        self, concurrency: int, rpm: float | None = None, tpm: float | None = None
    ) -> None:
        self.limit = AdaptiveLimit(concurrency)
        self.pacer = Pacer(rpm=rpm, tpm=tpm)
        self.leased = 0  # slots out with workers (== limit.in_flight)
        self.rate_limited = 0
        # Tickets out per worker (and when each was leased): a worker that dies (its node
        # lost) never gives its slots back, so the driver has them `reclaim`ed, or the
        # survivors would run short.
        self.held: dict[str, dict[int, float]] = {}
        self.gone: set[str] = set()
        self.longest_hold = 0.0  # seconds, over every slot given back so far

    # ------------------------------------------------------------ concurrency

    async def lease(
        self, n: int, successes: int = 0, owner: str = ""
    ) -> tuple[list[int], float]:
        """Wait for one slot, then take up to `n` that are free; returns (tickets, limit)."""
        self._succeeded(successes)
        tickets = [await self.limit.acquire()]
        while len(tickets) < n and self.limit.in_flight < int(self.limit.limit):
            tickets.append(await self.limit.acquire())  # free: returns at once
        if owner in self.gone:  # reclaimed while it waited: nobody will use these
            self.release(tickets)
            return [], self.limit.limit
        if owner:
            now = time.monotonic()
            self.held.setdefault(owner, {}).update((t, now) for t in tickets)
        # A `retry-after` seen by any worker holds everyone's next requests, paced or not.
        wait = self.pacer._resume_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return tickets, self.limit.limit

    def release(self, tickets: list[int], successes: int = 0, owner: str = "") -> float:
        mine = self.held.get(owner, {})
        now = time.monotonic()
        for t in tickets:
            if owner:
                if t not in mine:
                    continue  # reclaimed already: its worker died
                self.longest_hold = max(self.longest_hold, now - mine.pop(t))
            self.limit.release(t)
        self._succeeded(successes)
        return self.limit.limit

    async def reclaim(self, owner: str, timeout: float = 0.0) -> int:
        """Take back the slots of a worker that died; returns how many it held.

        Its requests may still be running at the provider, which was not told that the client
        went: the slots come back once those would have ended, judged by the longest any slot
        was held so far (×3, at least `RECLAIM_MIN_S`), and never later than `timeout` (the
        request timeout: no request outlives it)."""
        self.gone.add(owner)
        if self.held.get(owner):
            await asyncio.sleep(min(timeout, max(RECLAIM_MIN_S, 3 * self.longest_hold)))
        tickets = self.held.pop(owner, {})
        for t in tickets:
            self.limit.release(t)
        return len(tickets)

    def overload(self, ticket: int) -> float:
        """A 429 for the request holding `ticket`: one cut per overload event, for everyone."""
        self.rate_limited += 1
        self.limit.on_overload(ticket)
        return self.limit.limit

    def _succeeded(self, n: int) -> None:
        for _ in range(n):
            self.limit.on_success()

    # ------------------------------------------------------------ pacing

    async def pace(self, requests: int, tokens: int) -> tuple[bool, bool]:
        """Take `requests` requests worth `tokens` tokens from the buckets, waiting as needed;
        returns which limits are known (requests, tokens)."""
        if self.pacer.has_limits or self.pacer._resume_at > time.monotonic():
            await self.pacer.acquire(tokens, requests=requests)
        return self.pacer.requests is not None, self.pacer.tokens is not None

    def throttled(self, tokens: int, headers: dict[str, str]) -> None:
        self.pacer.throttled(tokens, headers)

    def observe(self, headers: dict[str, str]) -> tuple[bool, bool]:
        self.pacer.observe(headers)
        return self.pacer.requests is not None, self.pacer.tokens is not None

    def pause(self, seconds: float) -> None:
        self.pacer.pause(seconds)

    def limits(self) -> tuple[bool, bool]:
        return self.pacer.requests is not None, self.pacer.tokens is not None

    def snapshot(self) -> dict[str, Any]:
        return {
            "limit": self.limit.limit,
            "in_flight": self.limit.in_flight,
            "rate_limited": self.rate_limited,
            "paced_s": self.pacer.waited_s,
        }


def budget_actor(name: str, concurrency: int, rpm: float | None, tpm: float | None) -> Any:
    """Create (or get) the named budget actor of a run."""
    import ray

    from realign.distributed import NAMESPACE, on_this_node

    # Many workers wait in `lease`/`pace` at once: an async actor serves them all on one loop.
    cls = ray.remote(num_cpus=0, max_concurrency=10_000)(Budget)  # type: ignore[call-overload]
    return cls.options(
        name=name, namespace=NAMESPACE, get_if_exists=True, scheduling_strategy=on_this_node()
    ).remote(concurrency, rpm, tpm)


def _call(method: Any, *args: Any) -> Any:
    """Await a Ray actor method (or, in tests, a plain `Budget` method) from the worker loop."""
    remote = getattr(method, "remote", None)
    if remote is None:
        out = method(*args)
        return out if asyncio.iscoroutine(out) else _done(out)
    return _ref_result(remote(*args))


async def _done(value: Any) -> Any:
    return value


async def _ref_result(ref: Any) -> Any:
    return await ref


def _send(method: Any, *args: Any) -> None:
    """Fire and forget (ordered after earlier calls of this worker)."""
    remote = getattr(method, "remote", None)
    if remote is not None:
        remote(*args)
    else:
        method(*args)  # a plain `Budget`: its fire-and-forget methods are not coroutines


class SharedLimit:
    """`AdaptiveLimit`'s interface for the engine, backed by the shared `Budget`."""

    def __init__(
        self, budget: Any, maximum: int, *, lease: int = LEASE, owner: str = ""
    ) -> None:
        self.budget = budget
        self.owner = owner  # this worker's name at the budget (whose slots to reclaim)
        self.maximum = maximum  # the run's total: sizes nothing per worker but the window
        self.limit = float(maximum)
        self.lease_size = lease
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._leasing = False
        self._lease_task: asyncio.Future[None] | None = None
        self._returning: list[int] = []
        self._successes = 0
        self._flush_scheduled = False

    @property
    def in_flight(self) -> int:
        return 0  # held by the budget actor; not known here

    @property
    def has_waiters(self) -> bool:
        return False  # a released slot goes back to the budget, never straight to a waiter

    async def acquire(self) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if not self._leasing:
            self._leasing = True
            self._lease_task = asyncio.ensure_future(self._lease_loop())
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed a slot while being cancelled
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    async def _lease_loop(self) -> None:
        try:
            while self._waiters:
                want = min(len(self._waiters), self.lease_size)
                successes, self._successes = self._successes, 0
                tickets, self.limit = await _call(
                    self.budget.lease, want, successes, self.owner
                )
                for t in tickets:
                    while self._waiters and self._waiters[0].done():
                        self._waiters.popleft()  # cancelled while waiting
                    if self._waiters:
                        self._waiters.popleft().set_result(t)
                    else:
                        self.release(t)
        finally:
            self._leasing = False

    def release(self, ticket: int) -> None:
        # Back to the budget, not to a local waiter: a worker that kept reusing its slots
        # would starve the others and never feel a cut of the shared limit.
        self._returning.append(ticket)
        self._schedule_flush()

    def on_success(self) -> None:
        self._successes += 1

    def on_overload(self, ticket: int) -> bool:
        # Sent before the ticket's release (which waits for the flush): the budget still
        # knows the epoch the ticket started in, so one overload event cuts once.
        _send(self.budget.overload, ticket)
        return True

    def _schedule_flush(self) -> None:
        if len(self._returning) >= self.lease_size:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(RETURN_AFTER_S, self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._returning or self._successes:
            tickets, self._returning = self._returning, []
            successes, self._successes = self._successes, 0
            _send(self.budget.release, tickets, successes, self.owner)


class SharedPacer:
    """`Pacer`'s interface for the engine, backed by the shared `Budget`.

    Requests and tokens are taken from the shared buckets for up to `lease` requests at a time
    (sized like the request at hand) and spent locally; a `retry-after` pause is applied here at
    once and sent to the budget, which holds every other worker's next lease until it ends.
    """

    def __init__(
        self, budget: Any, *, rpm: float | None, tpm: float | None, lease: int = PACE_LEASE
    ) -> None:
        self.budget = budget
        self.lease_size = lease
        self._requests_known = bool(rpm)
        self._tokens_known = bool(tpm)
        self._credit_requests = 0
        self._credit_tokens = 0
        self._resume_at = 0.0
        self._lock = asyncio.Lock()
        self._seen_limits: tuple[str | None, str | None] = (None, None)
        self.waited_s = 0.0

    @property
    def counts_tokens(self) -> bool:
        return self._tokens_known

    @property
    def has_limits(self) -> bool:
        return self._requests_known or self._tokens_known

    def pause(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)
        self._credit_requests = self._credit_tokens = 0  # taken before the provider said stop
        _send(self.budget.pause, seconds)

    async def acquire(self, tokens: int) -> None:
        async with self._lock:
            wait = self._resume_at - time.monotonic()
            if wait > 0:
                self.waited_s += wait
                await asyncio.sleep(wait)
            if not self.has_limits:
                return
            need = tokens if self._tokens_known else 0
            if self._credit_requests >= 1 and self._credit_tokens >= need:
                self._credit_requests -= 1
                self._credit_tokens -= need
                return
            n = self.lease_size
            t0 = time.monotonic()
            self._requests_known, self._tokens_known = await _call(self.budget.pace, n, need * n)
            self.waited_s += time.monotonic() - t0
            self._credit_requests += n - 1
            self._credit_tokens += need * (n - 1)

    def throttled(self, tokens: int, headers: Mapping[str, str]) -> None:
        _send(self.budget.throttled, tokens, _ratelimit_headers(headers))

    def observe(self, headers: Mapping[str, str], *, throttled: bool = False) -> None:
        """Forward the provider's limits to the budget when they change (once per change,
        not once per response)."""
        low = _ratelimit_headers(headers)
        seen = (low.get("x-ratelimit-limit-requests"), low.get("x-ratelimit-limit-tokens"))
        if seen == (None, None) or seen == self._seen_limits:
            return
        self._seen_limits = seen
        self._requests_known = self._requests_known or seen[0] is not None
        self._tokens_known = self._tokens_known or seen[1] is not None
        _send(self.budget.observe, low)


def _ratelimit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        k.lower(): v
        for k, v in (headers or {}).items()
        if k.lower().startswith(("x-ratelimit", "retry-after"))
    }


def share_budget(
    engine: Any, budget: Any, *, rpm: float | None, tpm: float | None, owner: str = ""
) -> None:
    """Make `engine` draw on `budget` instead of its own limiter and pacer (as `owner`)."""
    engine.limit = SharedLimit(budget, engine.limit.maximum, owner=owner)
    engine.pacer = SharedPacer(budget, rpm=rpm, tpm=tpm)
