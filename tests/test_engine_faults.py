"""The engine against a misbehaving OpenAI-compatible server (a local one, on 127.0.0.1).

The server injects 5% 429s, 5% 500s, 2% hangs and 2% malformed JSON answers. Every request
must end in a validated result or a clear error naming its record; a rerun on the same cache
re-sends only what failed; the API key appears in no log, error or cache file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from realign.llm.base import ChatRequest, Message
from realign.llm.cache import Cache
from realign.llm.engine import Engine, RequestFailed, StructuredOutputError
from realign.llm.openai_backend import OpenAIBackend

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-FAULTS-0123456789abcdef"
N = 500  # enough that every fault type surely occurs (P(no hang) = 0.98^500 < 1e-4)

pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])


def _load_server_module() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the server by path.
    name = "realign_bench_fake_openai_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "benchmarks" / "fake_openai_server.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Verdict(BaseModel):
    label: str
    score: int
    ok: bool


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[tuple[str, object]]:
    mod = _load_server_module()
    server = mod.FakeOpenAIServer(
        mod.ServerConfig(
            latency=0.005,
            p429=0.05,
            p500=0.05,
            phang=0.02,
            pmalformed=0.02,
            seed=7,
            injected_retry_after=0.05,
        )
    )
    url = server.start_in_thread()
    yield url, server
    server.stop_thread()


def _requests() -> list[ChatRequest]:
    return [
        ChatRequest(
            stage="judge",
            messages=[Message(role="user", content=f"judge answer number {i}")],
            record_id=f"rec-{i}",
            max_tokens=50,
        )
        for i in range(N)
    ]


async def _run_all(url: str, cache: Cache) -> tuple[list[object], Engine]:
    backend = OpenAIBackend("gpt-4o-mini", base_url=url, api_key=KEY)
    engine = Engine(
        backend,
        concurrency=32,
        cache=cache,
        request_timeout=2.5,  # hangs end here; generous because the first calls import LangChain
        backoff_base=0.01,
        max_retries=4,
        reask=2,
    )
    try:
        out = await asyncio.gather(
            *(engine.structured(r, Verdict) for r in _requests()), return_exceptions=True
        )
    finally:
        await engine.aclose()
    return out, engine


def test_every_request_ends_in_a_result_or_a_clear_error(
    faulty_server: tuple[str, object], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, server = faulty_server
    caplog.set_level(logging.DEBUG)
    cache_path = tmp_path / "cache.sqlite"
    cache = Cache(cache_path)

    out, engine = asyncio.run(_run_all(url, cache))

    stats = server.stats  # type: ignore[attr-defined]
    # The faults really happened.
    assert stats.injected_429 > 0 and stats.injected_500 > 0
    assert stats.hangs > 0 and stats.malformed > 0
    assert engine.stats.timeouts > 0 and engine.stats.reasks > 0

    failures: list[BaseException] = []
    for i, o in enumerate(out):
        if isinstance(o, BaseException):
            assert isinstance(o, RequestFailed | StructuredOutputError), repr(o)
            assert f"rec-{i}" in str(o), str(o)
            failures.append(o)
        else:
            assert isinstance(o, list) and len(o) == 1 and isinstance(o[0], Verdict)
    # With 4 retries, a request fails for good only with bad luck several times over.
    assert len(failures) <= N * 0.02

    # A rerun on the same cache sends only what failed.
    before = stats.requests
    out2, engine2 = asyncio.run(_run_all(url, Cache(cache_path)))
    assert engine2.stats.cache_hits >= N - len(failures)
    if not failures:
        assert stats.requests == before
    assert sum(isinstance(o, BaseException) for o in out2) <= len(failures)

    # The key never leaks: not in logs, errors, or the cache files.
    assert stats.auth_headers_seen > 0  # it was sent to the server, as it must be
    assert KEY not in caplog.text
    assert all(KEY not in str(f) and KEY not in repr(f) for f in failures)
    cache.close()
    for f in tmp_path.glob("cache.sqlite*"):
        assert KEY.encode() not in f.read_bytes(), f


def test_a_dead_endpoint_opens_the_circuit(tmp_path: Path) -> None:
    from realign.llm.engine import CircuitOpen

    mod = _load_server_module()
    server = mod.FakeOpenAIServer(mod.ServerConfig(p500=1.0, seed=1))
    url = server.start_in_thread()
    try:

        async def go() -> list[object]:
            engine = Engine(
                OpenAIBackend("gpt-4o-mini", base_url=url, api_key=KEY),
                concurrency=4,
                max_retries=3,
                backoff_base=0.001,
                breaker_window=20,
            )
            try:
                return await asyncio.gather(
                    *(engine.structured(r, Verdict) for r in _requests()[:100]),
                    return_exceptions=True,
                )
            finally:
                await engine.aclose()

        out = asyncio.run(go())
    finally:
        server.stop_thread()
    assert sum(isinstance(o, CircuitOpen) for o in out) > 50
    # It stopped early instead of trying 100 requests x 4 attempts.
    assert server.stats.requests < 60
