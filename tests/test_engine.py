"""Engine behaviour with in-process backends: cache, retries, 429s, timeouts, breaker, budget."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from realign.llm.base import BackendError, ChatRequest, ChatResponse, Message, Usage
from realign.llm.cache import Cache
from realign.llm.engine import (
    BudgetExceeded,
    CircuitOpen,
    Engine,
    OutputTruncated,
    RequestFailed,
    StructuredOutputError,
)
from realign.llm.fake import FakeBackend
from realign.llm.pricing import Price, PriceTable
from realign.llm.ratelimit import AdaptiveLimit, Pacer, parse_duration, retry_after_seconds

PRICES = PriceTable(models={"test-model": Price(input=1.0, output=2.0)})


class Scripted:
    """A backend whose every call runs `script(call_number, request)`: returns text or raises."""

    name = "scripted"

    def __init__(
        self, script: Callable[[int, ChatRequest], object], model: str = "test-model"
    ) -> None:
        self.script = script
        self.model = model
        self.calls = 0
        self.in_flight = 0
        self.peak = 0

    @property
    def backend_id(self) -> str:
        return f"scripted:{self.model}"

    @property
    def supports_n(self) -> bool:
        return True

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            out = self.script(self.calls, request)
            if asyncio.iscoroutine(out):
                out = await out
            if isinstance(out, BaseException):
                raise out
            if isinstance(out, ChatResponse):
                return out
            return ChatResponse(
                texts=[str(out)], usage=Usage(prompt_tokens=1000, completion_tokens=500)
            )
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


def req(i: int = 0, stage: str = "classify") -> ChatRequest:
    return ChatRequest(
        stage=stage, messages=[Message(role="user", content=f"q{i}")], record_id=f"r{i}"
    )


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_cache_hit_never_calls_the_backend_again(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    headers = {"x-ratelimit-limit-requests": "100"}
    backend = Scripted(lambda n, r: ChatResponse(texts=["a"], headers=headers))
    first = run(Engine(backend, cache=cache, prices=PRICES).chat(req()))
    assert not first.cached
    engine = Engine(backend, cache=cache, prices=PRICES)
    again = run(engine.chat(req()))
    assert again.cached and again.texts == ["a"] and again.headers == {}
    assert backend.calls == 1 and engine.stats.cache_hits == 1
    assert cache.info().by_stage == {"classify": 1}


def test_identical_requests_in_flight_are_sent_once() -> None:
    async def slow(n: int, r: ChatRequest) -> str:
        await asyncio.sleep(0.05)
        return "same"

    backend = Scripted(slow)
    engine = Engine(backend, prices=PRICES)

    async def go() -> list[ChatResponse]:
        return await asyncio.gather(*(engine.chat(req(0)) for _ in range(10)))

    out = run(go())
    assert backend.calls == 1 and engine.stats.coalesced == 9
    assert all(r.texts == ["same"] for r in out)


def test_5xx_is_retried_then_succeeds() -> None:
    def flaky(n: int, r: ChatRequest) -> object:
        return BackendError("boom", status=500, retryable=True) if n <= 2 else "ok"

    engine = Engine(Scripted(flaky), backoff_base=0.001, prices=PRICES)
    assert run(engine.chat(req())).texts == ["ok"]
    assert engine.stats.retries == 2 and engine.stats.errors == 0


def test_non_retryable_error_fails_at_once_naming_stage_and_record() -> None:
    backend = Scripted(lambda n, r: BackendError("bad request", status=400))
    engine = Engine(backend, prices=PRICES)
    with pytest.raises(
        RequestFailed, match=r"classify request for record r7 failed after 1 attempt: HTTP 400"
    ):
        run(engine.chat(req(7)))
    assert backend.calls == 1 and engine.stats.errors == 1


def test_out_of_retries_is_a_clear_error() -> None:
    backend = Scripted(lambda n, r: BackendError("unavailable", status=503, retryable=True))
    engine = Engine(backend, max_retries=2, backoff_base=0.001, prices=PRICES)
    with pytest.raises(RequestFailed, match="failed after 3 attempts: HTTP 503"):
        run(engine.chat(req()))
    assert backend.calls == 3


def test_timeout_is_retried_and_counted() -> None:
    async def hang_once(n: int, r: ChatRequest) -> str:
        if n == 1:
            await asyncio.sleep(10)
        return "late but fine"

    engine = Engine(Scripted(hang_once), request_timeout=0.05, backoff_base=0.001, prices=PRICES)
    t = time.monotonic()
    assert run(engine.chat(req())).texts == ["late but fine"]
    assert time.monotonic() - t < 2
    assert engine.stats.timeouts == 1 and engine.stats.retries == 1


def test_429_obeys_retry_after_and_halves_concurrency() -> None:
    def limited(n: int, r: ChatRequest) -> object:
        if n == 1:
            return BackendError("slow down", status=429, retryable=True, retry_after=0.3)
        return "ok"

    engine = Engine(Scripted(limited), concurrency=16, prices=PRICES)
    t = time.monotonic()
    run(engine.chat(req()))
    assert time.monotonic() - t >= 0.3
    assert engine.stats.rate_limited == 1
    assert engine.limit.limit == pytest.approx(8.0, abs=0.2)  # cut in half, then +1/limit
    assert engine.stats.errors == 0


def test_429_with_an_http_date_retry_after_waits_until_that_date() -> None:
    # RFC 9110: Retry-After may be an HTTP date (proxies and gateways send one). The engine
    # reads it from the headers when the backend gave no `retry_after` of its own.
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # 1 to 2 s ahead (whole seconds)

    def limited(n: int, r: ChatRequest) -> object:
        if n == 1:
            return BackendError(
                "slow down", status=429, retryable=True, headers={"retry-after": when}
            )
        return "ok"

    # Backoff so small that without the date the retry would come within milliseconds.
    engine = Engine(Scripted(limited), prices=PRICES, backoff_base=0.0001, backoff_cap=0.001)
    t = time.monotonic()
    run(engine.chat(req()))
    assert time.monotonic() - t >= 0.9
    assert engine.stats.rate_limited == 1 and engine.stats.retries == 1


def test_retry_after_seconds_reads_http_dates() -> None:
    ahead = retry_after_seconds(
        {"Retry-After": email.utils.formatdate(time.time() + 60, usegmt=True)}
    )
    assert ahead is not None and 58 <= ahead <= 60
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}) == 0.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0


def test_concurrency_is_bounded() -> None:
    async def slow(n: int, r: ChatRequest) -> str:
        await asyncio.sleep(0.01)
        return "ok"

    backend = Scripted(slow)
    engine = Engine(backend, concurrency=5, prices=PRICES)

    async def go() -> None:
        await asyncio.gather(*(engine.chat(req(i)) for i in range(40)))

    run(go())
    assert backend.peak == 5 and backend.calls == 40


def test_circuit_breaker_stops_a_failing_run() -> None:
    backend = Scripted(lambda n, r: BackendError("down", status=502, retryable=True))
    engine = Engine(
        backend,
        concurrency=2,
        max_retries=0,
        breaker_window=10,
        breaker_threshold=0.5,
        prices=PRICES,
    )

    async def go() -> list[object]:
        return await asyncio.gather(
            *(engine.chat(req(i)) for i in range(30)), return_exceptions=True
        )

    out = run(go())
    assert any(isinstance(o, CircuitOpen) for o in out)
    assert backend.calls <= 12  # stops soon after the window fills, not after all 30
    with pytest.raises(CircuitOpen, match="10 of the last 10 requests failed"):
        run(engine.chat(req(99)))


def test_cost_is_accounted_from_usage() -> None:
    engine = Engine(Scripted(lambda n, r: "ok"), prices=PRICES)
    run(engine.chat(req()))
    # 1000 input tokens at $1/M + 500 output at $2/M
    assert engine.stats.cost_usd == pytest.approx(0.002)
    assert "$0.0020" in engine.stats.summary()


def test_max_cost_stops_before_overspending() -> None:
    backend = Scripted(lambda n, r: "ok")  # each answer costs $0.002
    engine = Engine(backend, max_cost=0.011, concurrency=1, prices=PRICES)

    async def go() -> list[object]:
        out: list[object] = []
        for i in range(20):
            try:
                out.append(await engine.chat(req(i)))
            except BudgetExceeded as e:
                out.append(e)
        return out

    out = run(go())
    assert isinstance(out[-1], BudgetExceeded)
    assert engine.stats.cost_usd <= 0.011  # the first answer teaches the real cost per request
    assert engine.stats.completed == 5
    assert backend.calls < 20
    assert "--max-cost $0.01 reached" in str(out[-1])


def test_max_cost_needs_a_known_price() -> None:
    with pytest.raises(ValueError, match="needs a price for model 'mystery'"):
        Engine(Scripted(lambda n, r: "ok", model="mystery"), max_cost=1.0, prices=PRICES)


def test_rpm_paces_requests() -> None:
    backend = Scripted(lambda n, r: "ok")
    engine = Engine(backend, rpm=1200, prices=PRICES)  # 20/s, bursts of 20

    async def go() -> None:
        await asyncio.gather(*(engine.chat(req(i)) for i in range(50)))

    t = time.monotonic()
    run(go())
    assert time.monotonic() - t >= 2.4  # 50 at ~20/s (starting empty, 3% under the limit)


def test_limits_are_learned_from_headers() -> None:
    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "90000"}
    engine = Engine(
        Scripted(lambda n, r: ChatResponse(texts=["ok"], headers=headers)), prices=PRICES
    )
    run(engine.chat(req()))
    assert engine.pacer.requests is not None and engine.pacer.requests.per_minute == pytest.approx(
        500 * 0.97
    )
    assert engine.pacer.tokens is not None and engine.pacer.tokens.per_minute == pytest.approx(
        90000 * 0.97
    )


def test_structured_reasks_then_fails_with_record_id() -> None:
    class Out(BaseModel):
        score: int

    engine = Engine(FakeBackend(lambda r: "not json", model="test-model"), reask=1, prices=PRICES)
    with pytest.raises(
        StructuredOutputError, match="judge for record r3: output did not match Out"
    ):
        run(engine.structured(req(3, stage="judge"), Out))
    assert engine.stats.reasks == 2


def test_truncated_output_raises_at_once_when_asked_else_is_reasked() -> None:
    class Out(BaseModel):
        text: str

    def cut(calls: int, r: ChatRequest) -> ChatResponse:
        return ChatResponse(texts=['{"text": "a long ans'], finish_reasons=["length"])

    backend = Scripted(cut)
    engine = Engine(backend, reask=2)
    with pytest.raises(OutputTruncated, match="cut off at max_tokens=50") as e:
        run(
            engine.structured(
                req(1).model_copy(update={"max_tokens": 50}), Out, raise_truncated=True
            )
        )
    assert backend.calls == 1 and e.value.max_tokens == 50 and engine.stats.reasks == 0
    assert e.value.raw_output == '{"text": "a long ans'
    # Without raise_truncated (every other stage): re-asked as before.
    backend = Scripted(cut)
    with pytest.raises(StructuredOutputError) as e2:
        run(Engine(backend, reask=2).structured(req(2), Out))
    assert backend.calls == 3 and not isinstance(e2.value, OutputTruncated)
    # Invalid but not cut off: re-asked even with raise_truncated.
    backend = Scripted(lambda c, r: ChatResponse(texts=["nope"], finish_reasons=["stop"]))
    with pytest.raises(StructuredOutputError) as e3:
        run(Engine(backend, reask=1).structured(req(3), Out, raise_truncated=True))
    assert backend.calls == 2 and not isinstance(e3.value, OutputTruncated)


def test_adaptive_limit_cuts_once_per_overload_and_grows_back() -> None:
    async def go() -> None:
        lim = AdaptiveLimit(8)
        tickets = [await lim.acquire() for _ in range(8)]
        assert lim.on_overload(tickets[0]) is True
        assert lim.limit == 4
        # Requests sent before the cut do not cut again.
        assert lim.on_overload(tickets[1]) is False
        for t in tickets:
            lim.release(t)
        for _ in range(40):
            lim.on_success()
        assert lim.limit == 8

    run(go())


def test_pacer_tokens_and_duration_parsing() -> None:
    assert parse_duration("6m0s") == 360
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5") == 1.5
    assert parse_duration("soon") is None

    async def go() -> float:
        pacer = Pacer(tpm=6000, headroom=1.0)  # 100 tokens/s, bucket of 50, starts empty
        t = time.monotonic()
        for _ in range(3):
            await pacer.acquire(50)
        return time.monotonic() - t

    assert 1.4 <= run(go()) < 2.5  # 150 tokens at 100/s


def test_batch_mode_defers_misses_and_serves_hits(tmp_path: Path) -> None:
    from realign.llm.engine import Deferred

    cache = Cache(tmp_path / "c.sqlite")
    backend = Scripted(lambda n, r: "live")
    run(Engine(backend, cache=cache, prices=PRICES).chat(req(1)))
    queued: list[ChatRequest] = []
    engine = Engine(backend, cache=cache, prices=PRICES, defer_to=queued)
    assert run(engine.chat(req(1))).texts == ["live"]  # cached: answered
    with pytest.raises(Deferred, match="record r2"):
        run(engine.chat(req(2)))
    assert [r.record_id for r in queued] == ["r2"] and backend.calls == 1


def test_bad_requests_do_not_open_the_circuit() -> None:
    backend = Scripted(lambda n, r: BackendError("context too long", status=400))
    engine = Engine(backend, concurrency=2, breaker_window=10, prices=PRICES)

    async def go() -> list[object]:
        return await asyncio.gather(
            *(engine.chat(req(i)) for i in range(30)), return_exceptions=True
        )

    out = run(go())
    assert all(isinstance(o, RequestFailed) for o in out)  # each record fails on its own
    assert backend.calls == 30


class Score(BaseModel):
    score: int


def test_an_answer_that_never_validated_is_not_cached_so_a_rerun_asks_again(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    answers = iter(["not json", "{}", '{"score": 4}'])  # two invalid, then a fixed model
    backend = Scripted(lambda n, r: next(answers))
    with pytest.raises(StructuredOutputError):
        run(Engine(backend, cache=cache, reask=1, prices=PRICES).structured(req(1), Score))
    assert backend.calls == 2 and len(cache) == 0
    rerun = Engine(backend, cache=cache, reask=1, prices=PRICES)
    assert run(rerun.structured(req(1), Score)) == [Score(score=4)]
    assert backend.calls == 3 and rerun.stats.requests == 1


def test_a_reasked_success_is_cached_whole_and_replayed_for_free(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c.sqlite")
    answers = iter(["oops", '{"score": 2}'])
    backend = Scripted(lambda n, r: next(answers))
    first = run(Engine(backend, cache=cache, prices=PRICES).structured(req(1), Score))
    assert first == [Score(score=2)] and backend.calls == 2 and len(cache) == 2
    again = Engine(backend, cache=cache, prices=PRICES)
    assert run(again.structured(req(1), Score)) == first
    assert backend.calls == 2 and again.stats.cache_hits == 2


def test_a_cached_answer_that_does_not_validate_is_dropped(tmp_path: Path) -> None:
    # E.g. a Batch API answer, or one stored by a realign that cached before validating.
    cache = Cache(tmp_path / "c.sqlite")
    backend = Scripted(lambda n, r: "not json")
    engine = Engine(backend, cache=cache, reask=0, prices=PRICES)
    bad = req(1).model_copy(
        update={"json_schema": Score.model_json_schema(), "schema_name": "Score"}
    )
    engine.store(bad, ChatResponse(texts=["not json"]))
    assert len(cache) == 1
    with pytest.raises(StructuredOutputError):
        run(engine.structured(req(1), Score))
    assert backend.calls == 0 and len(cache) == 0  # replayed once, then forgotten
    with pytest.raises(StructuredOutputError):
        run(engine.structured(req(1), Score))
    assert backend.calls == 1  # the rerun asked the model


def test_n_choices_partly_valid_are_completed_by_a_reask_and_cached_together(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path / "c.sqlite")

    def answer(n: int, r: ChatRequest) -> ChatResponse:
        texts = ['{"score": 1}', "cut off", '{"score": 3}'] if n == 1 else ['{"score": 9}']
        assert r.n == len(texts)  # the re-ask asks only for the missing choice
        return ChatResponse(texts=texts)

    backend = Scripted(answer)
    three = req(1).model_copy(update={"n": 3})
    out = run(Engine(backend, cache=cache, prices=PRICES).structured(three, Score))
    assert [o.score for o in out] == [1, 3, 9] and backend.calls == 2
    replay = Engine(backend, cache=cache, prices=PRICES)
    assert run(replay.structured(three, Score)) == out and backend.calls == 2


def test_a_refused_connection_is_reported_as_one() -> None:
    backend = Scripted(lambda n, r: ConnectionRefusedError(111, "Connection refused"))
    engine = Engine(backend, max_retries=1, backoff_base=0.001, prices=PRICES)
    with pytest.raises(RequestFailed, match=r"connection refused \(is the server running\?\)"):
        run(engine.chat(req(1)))
    assert backend.calls == 2  # retried: a server may be starting


def test_batch_answers_that_never_validate_are_dropped_so_the_next_batch_asks_again(
    tmp_path: Path,
) -> None:
    from realign.llm.engine import Deferred

    cache = Cache(tmp_path / "c.sqlite")
    backend = Scripted(lambda n, r: "live")

    def batch_run() -> list[ChatRequest]:
        queued: list[ChatRequest] = []
        engine = Engine(backend, cache=cache, reask=1, prices=PRICES, defer_to=queued)
        with pytest.raises((Deferred, StructuredOutputError)):
            run(engine.structured(req(1), Score))
        return queued

    (first,) = batch_run()
    engine = Engine(backend, cache=cache, prices=PRICES)
    engine.store(first, ChatResponse(texts=["not json"]))  # what `batch collect` stores
    (reask,) = batch_run()  # the invalid answer is re-asked through the next batch
    assert reask.messages[-2].content == "not json"
    engine.store(reask, ChatResponse(texts=["still not json"]))
    assert batch_run() == [] and len(cache) == 0  # out of re-asks: the record failed, forgotten
    assert batch_run() == [first]  # so the next batch run asks again from the start
    assert backend.calls == 0


def test_first_request_goes_alone_until_answered_when_no_limit_is_known() -> None:
    """Its x-ratelimit headers pace the rest, instead of a first burst into an unknown limit."""
    starts: list[tuple[int, int]] = []  # (in flight when it started, answers so far)

    class Probe:
        name, model, backend_id, supports_n = "probe", "m", "probe:m", True
        in_flight = answered = 0

        async def chat(self, request: ChatRequest) -> ChatResponse:
            starts.append((self.in_flight, self.answered))
            self.in_flight += 1
            await asyncio.sleep(0.05)
            self.in_flight -= 1
            self.answered += 1
            return ChatResponse(texts=["ok"], headers={"x-ratelimit-limit-requests": "600000"})

        async def aclose(self) -> None:
            pass

    async def go(engine: Engine) -> None:
        await asyncio.gather(*(engine.chat(req(i)) for i in range(8)))

    engine = Engine(Probe(), concurrency=8)  # type: ignore[arg-type]
    run(go(engine))
    assert starts[0] == (0, 0) and all(answered >= 1 for _, answered in starts[1:])
    assert max(in_flight for in_flight, _ in starts) > 1  # the rest went together
    assert engine.pacer.has_limits  # learned from the first answer

    starts.clear()
    run(go(Engine(Probe(), concurrency=8, rpm=600_000)))  # a limit given: no probe
    assert sum(answered == 0 for _, answered in starts) > 1
