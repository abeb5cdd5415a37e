"""The benchmark server's lean mode (`benchmarks/fake_openai_server.py`, `lean=True`): the
CPU-light endpoint `benchmarks/ray_throughput.py` measures clients against. It must answer
like the full server (structured output by tool call or by json_schema, `n` choices, errors),
keep its capacity, and report its own CPU in `/stats`."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from realign.llm.base import ChatRequest, Message
from realign.llm.engine import Engine
from realign.llm.openai_backend import OpenAIBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fake_openai_server import FakeOpenAIServer, ServerConfig, fetch_stats  # noqa: E402

pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
KEY = "sk-test-lean-0123456789"


class Label(BaseModel):
    task_type: str
    confidence: float
    tags: list[str]


class Verdict(BaseModel):
    ok: bool
    score: int


@pytest.fixture()
def lean_server() -> Iterator[tuple[str, Any]]:
    server = FakeOpenAIServer(ServerConfig(lean=True, latency=0.02, capacity=5))
    url = server.start_in_thread()
    yield url, server
    server.stop_thread()


def _request(i: int, *, n: int = 1) -> ChatRequest:
    return ChatRequest(
        stage="classify",
        messages=[Message(role="user", content=f"instruction {i}: {'word ' * (i % 7)}")],
        record_id=f"r{i}",
        max_tokens=64,
        n=n,
    )


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_lean_answers_fill_each_requested_schema(lean_server: tuple[str, Any], method: str) -> None:
    url, server = lean_server

    async def go() -> tuple[list[Label], list[Verdict]]:
        backend = OpenAIBackend(
            "gpt-4o-mini",
            base_url=url,
            api_key=KEY,
            structured_method=method,  # type: ignore[arg-type]
        )
        engine = Engine(backend, concurrency=20, cache=None, max_retries=0, reask=0)
        try:
            labels = await asyncio.gather(
                *(engine.structured(_request(i), Label) for i in range(30))
            )
            verdicts = await asyncio.gather(
                *(engine.structured(_request(100 + i), Verdict) for i in range(10))
            )
        finally:
            await engine.aclose()
        return [x[0] for x in labels], [x[0] for x in verdicts]

    labels, verdicts = asyncio.run(go())
    # Two request shapes, two answers built; every other request got one of them replayed.
    assert len(server._answers) == 2
    assert all(isinstance(x, Label) and x.tags for x in labels)
    assert all(isinstance(v, Verdict) for v in verdicts)
    st = fetch_stats(url)
    assert st.requests == st.ok == st.admitted == 40
    assert 1 <= st.peak_concurrency <= 5  # the capacity holds: the rest waited in line


def test_lean_answers_n_choices(lean_server: tuple[str, Any]) -> None:
    url, _ = lean_server

    async def go() -> list[str]:
        backend = OpenAIBackend("gpt-4o-mini", base_url=url, api_key=KEY)
        try:
            return (await backend.chat(_request(1, n=3))).texts
        finally:
            await backend.aclose()

    texts = asyncio.run(go())
    assert len(texts) == 3 and all(t.startswith("fake answer") for t in texts)


def _raw(url: str, *pieces: bytes) -> bytes:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.05)  # separate reads on the server's side
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_lean_errors_and_stats(lean_server: tuple[str, Any]) -> None:
    url, _ = lean_server
    # A body that is not JSON, sent in two pieces: split out whole, answered 400.
    body = b"{not json"
    head = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    assert _raw(url, head, body[:4], body[4:]).startswith(b"HTTP/1.1 400")
    assert _raw(url, b"GET /nowhere HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    st = fetch_stats(url)
    assert st.requests == 1 and st.ok == 0  # the 400 counted as a request, not answered OK
    assert st.pid == os.getpid()  # run in a thread here: the host process
    assert st.cpu_seconds > 0


def test_lean_refuses_what_it_does_not_do() -> None:
    for field in ({"tpm": 1000.0}, {"p429": 0.1}, {"latency_jitter": 0.1}, {"key_sha256": "ab"}):
        with pytest.raises(ValidationError, match="lean mode has no"):
            ServerConfig(lean=True, **field)
    assert ServerConfig(tpm=1000.0).tpm == 1000.0  # the full server keeps them
