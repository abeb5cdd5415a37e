"""Flow-control pieces the engine composes: adaptive concurrency, request/token pacing, breaker.

- `AdaptiveLimit`: a semaphore whose size moves (AIMD, like TCP): cut in half on a 429, grown
  back by one per "window" of successes. Waiters are served first come, first served.
- `Pacer`: token buckets for requests/min and tokens/min, fed by `--rpm`/`--tpm` or by the
  provider's `x-ratelimit-*` headers, plus a global pause that honours `retry-after`.
- `CircuitBreaker`: trips when too many of the last N attempts failed, so a dead endpoint or a
  bad key stops the run instead of burning time and money.

All of these are single-event-loop objects (no threads), which is how the engine uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI-style reset value: "1s", "6m0s", "20ms", "0.5s" or a bare number."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from response headers: OpenAI's `retry-after-ms`, else `retry-after`,
    which RFC 9110 allows as seconds or as an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT",
    sent by proxies and gateways); a date in the past is 0. None when absent or unreadable."""
    low = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in low:
        with contextlib.suppress(ValueError):
            return max(0.0, float(low["retry-after-ms"]) / 1000.0)
    value = low.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": still GMT, as every HTTP date is
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


class AdaptiveLimit:
    """A resizable semaphore with additive-increase / multiplicative-decrease on overload."""

    def __init__(self, maximum: int, *, minimum: int = 1, decrease: float = 0.5) -> None:
        self.maximum = max(1, maximum)
        self.minimum = max(1, min(minimum, self.maximum))
        self.decrease = decrease
        self.limit = float(self.maximum)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Requests started before the last cut must not cut again: one overload event, one cut.
        self._epoch = 0
        self._started_epoch: dict[int, int] = {}
        self._tickets = 0

    async def acquire(self) -> int:
        """Wait for a slot; returns a ticket to pass to `release`."""
        if self.in_flight >= int(self.limit) or self._waiters:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    # We were handed a slot but are being cancelled: give it to the next one.
                    self.in_flight -= 1
                    self._wake()
                elif fut in self._waiters:
                    self._waiters.remove(fut)
                raise
        else:
            self.in_flight += 1
        self._tickets += 1
        ticket = self._tickets
        self._started_epoch[ticket] = self._epoch
        return ticket

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def release(self, ticket: int) -> None:
        self._started_epoch.pop(ticket, None)
        self.in_flight -= 1
        self._wake()

    def on_success(self) -> None:
        # +1 per `limit` successes: one step per round trip of the whole window.
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
            self._wake()

    def on_overload(self, ticket: int) -> bool:
        """A 429 for the request holding `ticket`; cuts the limit once per overload event."""
        if self._started_epoch.get(ticket, self._epoch) != self._epoch:
            return False
        self._epoch += 1
        self.limit = max(float(self.minimum), self.limit * self.decrease)
        return True

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)


class FirstAnswerGate:
    """Until the provider has answered once, one request at a time when no limit is known:
    its `x-ratelimit-*` headers then pace everything after it, instead of a first burst of
    `concurrency` requests running into a limit nobody knew yet (a 429 and a retry each).
    Costs one round trip at the start of a run."""

    def __init__(self) -> None:
        self.opened = False
        self._probing = False
        self._waiters: list[asyncio.Future[None]] = []

    async def enter(self) -> bool:
        """True for the one request that goes first; the others wait until it is answered."""
        if self.opened:
            return False
        if not self._probing:
            self._probing = True
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut
        return False

    def answered(self) -> None:
        self.opened = True
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class TokenBucket:
    """`rate` units per second, holding at most `capacity` (the allowed burst)."""

    def __init__(self, per_minute: float, *, burst_seconds: float) -> None:
        self.set_rate(per_minute, burst_seconds=burst_seconds)
        # Start empty: a burst granted now may only reach the provider after a stall (the first
        # request imports the client library), on top of what refills meanwhile.
        self.level = 0.0
        self._t = time.monotonic()

    def set_rate(self, per_minute: float, *, burst_seconds: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
        self._t = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` can be taken (an oversized amount only needs a full bucket)."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount  # may go negative for oversized requests: later ones wait it out

    def clamp(self, remaining: float) -> None:
        """The provider says only `remaining` is left: never believe we have more."""
        self._refill()
        self.level = min(self.level, remaining)


class Pacer:
    """Requests/min and tokens/min pacing plus a shared pause after a `retry-after`.

    Limits come from the constructor (`--rpm`, `--tpm`) and are replaced by what the provider
    reports in `x-ratelimit-limit-*` headers; `x-ratelimit-remaining-*` only ever lowers our
    estimate. Callers take their turn in order (one lock), so nobody starves.
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst_seconds: float = 0.5,
        headroom: float = 0.97,
    ) -> None:
        # Aim a little under the limit: sending exactly at it turns every bit of timing jitter
        # between us and the provider into a 429. For the same reason the burst we allow
        # ourselves is half a second of the limit: a provider's bucket holds more (OpenAI's a
        # minute, benchmarks/fake_openai_server.py's a second), so requests the event loop
        # sends in a clump after a stall still fit in it.
        self.headroom = headroom
        self.burst_seconds = burst_seconds
        self.requests = TokenBucket(rpm * headroom, burst_seconds=burst_seconds) if rpm else None
        self.tokens = TokenBucket(tpm * headroom, burst_seconds=burst_seconds) if tpm else None
        self._user_rpm = rpm
        self._user_tpm = tpm
        self._lock = asyncio.Lock()
        self._resume_at = 0.0
        self.waited_s = 0.0

    @property
    def counts_tokens(self) -> bool:
        return self.tokens is not None

    @property
    def has_limits(self) -> bool:
        return self.tokens is not None or self.requests is not None

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (the provider asked us to back off)."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    async def acquire(self, tokens: int, requests: int = 1) -> None:
        """Wait until `requests` requests carrying `tokens` tokens may be sent, then take them
        (more than one at a time: the shared budget of `--engine ray` leases in batches)."""
        async with self._lock:
            while True:
                wait = self._resume_at - time.monotonic()
                if self.requests is not None:
                    wait = max(wait, self.requests.wait_time(requests))
                if self.tokens is not None:
                    wait = max(wait, self.tokens.wait_time(tokens))
                if wait <= 0:
                    break
                self.waited_s += wait
                await asyncio.sleep(wait)
            if self.requests is not None:
                self.requests.take(requests)
            if self.tokens is not None:
                self.tokens.take(tokens)

    def throttled(self, tokens: int, headers: Mapping[str, str]) -> None:
        """A 429: the provider did not charge this request, but says how much is left."""
        if self.requests is not None:
            self.requests.level = min(self.requests.capacity, self.requests.level + 1)
        if self.tokens is not None:
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + tokens)
        self.observe(headers, throttled=True)

    def observe(self, headers: Mapping[str, str], *, throttled: bool = False) -> None:
        """Learn limits from `x-ratelimit-*` response headers (OpenAI, Azure, vLLM, …).

        `remaining-*` is only trusted on a 429: on a success it is one latency old, and the
        bucket has refilled since, so clamping to it would leave capacity unused.
        """
        if not headers:
            return
        low = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit")}
        if not low:
            return
        for kind in ("requests", "tokens"):
            limit = _num(low.get(f"x-ratelimit-limit-{kind}"))
            remaining = _num(low.get(f"x-ratelimit-remaining-{kind}"))
            bucket = self.requests if kind == "requests" else self.tokens
            user = self._user_rpm if kind == "requests" else self._user_tpm
            if limit is not None and limit > 0:
                # A user-given limit that is lower than the provider's wins (shared keys).
                per_minute = (min(limit, user) if user else limit) * self.headroom
                if bucket is None:
                    bucket = TokenBucket(per_minute, burst_seconds=self.burst_seconds)
                    if kind == "requests":
                        self.requests = bucket
                    else:
                        self.tokens = bucket
                elif bucket.per_minute != per_minute:
                    bucket.set_rate(per_minute, burst_seconds=self.burst_seconds)
            if throttled and bucket is not None and remaining is not None:
                bucket.clamp(remaining)


def _num(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class CircuitOpen(RuntimeError):
    """Too many recent requests failed: the run stops cleanly and can be resumed."""


class CircuitBreaker:
    """Open (stop) when more than `threshold` of the last `window` attempts failed."""

    def __init__(self, *, window: int = 50, threshold: float = 0.5) -> None:
        self.window = window
        self.threshold = threshold
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._failures = 0
        self.open_reason: str | None = None

    def record(self, failed: bool, detail: str = "") -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failures -= 1
        self._outcomes.append(failed)
        self._failures += failed
        if (
            self.open_reason is None
            and len(self._outcomes) >= self.window
            and self._failures > self.threshold * self.window
        ):
            self.open_reason = f"{self._failures} of the last {self.window} requests failed" + (
                f" (last error: {detail})" if detail else ""
            )

    def check(self) -> None:
        if self.open_reason is not None:
            raise CircuitOpen(
                f"circuit breaker open: {self.open_reason}; stopped so the run can be resumed "
                "once the endpoint is healthy"
            )
