"""A local OpenAI-compatible server for benchmarks and fault tests.

`POST /v1/chat/completions` answers like the OpenAI API: `n` choices, `usage`, and for
structured requests JSON that fills the requested schema (`response_format: json_schema` →
message content; `tools` → a tool call with the arguments). Knobs:

- latency (seconds per request, held while "generating") and capacity (max requests served at
  once; more wait in line, as on a real inference server);
- RPM / TPM limits enforced like OpenAI: a request is charged prompt tokens + `max_tokens`
  (× n) on arrival; over the limit → 429 with `retry-after`, `retry-after-ms` and
  `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers (also sent on every 200);
- fault injection: shares of injected 429s, 500s, hangs (no answer until the client gives up)
  and malformed JSON answers (status 200, content that is not valid JSON); and, for exact
  counts, malformed answers to the first `malformed_budget` requests whose prompt contains
  `malformed_marker` (e.g. some records' instructions), valid ones after that.

`GET /stats` returns counters (requests, 429s, charged tokens, peak concurrency, …) and the
server process's own CPU seconds so far (`cpu_seconds`), so a benchmark can say how much of the
machine the endpoint took.

`lean=True` is the CPU-light endpoint for measuring a client: an asyncio Protocol (no stream
objects, no task per connection) that splits requests out of the bytes received, parses each
body with orjson (C) only to key the answer by the request's shape (model, `n`,
`response_format`, `tools`), and replays each shape's whole HTTP answer, built once, as
pre-encoded bytes; a timer per request holds it for the latency. Capacity holds as above;
latency jitter, limits and fault injection do not exist there (a lean config that sets them is
refused), and `usage` is that of the shape's first request.

A raw asyncio HTTP/1.1 server (keep-alive, Content-Length bodies): no framework, so the server
costs little CPU next to the client being measured on a 2-core machine.

Use: `python benchmarks/fake_openai_server.py --port 8199 --latency 0.5 --capacity 200`, or
from Python `FakeOpenAIServer(ServerConfig(...)).start_in_thread()` / `serve_in_subprocess()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import BaseModel, model_validator

import realign.tokens as tok


class ServerConfig(BaseModel):
    latency: float = 0.0
    latency_jitter: float = 0.0  # uniform ± this many seconds
    capacity: int | None = None  # max requests served at once (None: unbounded)
    rpm: float | None = None
    tpm: float | None = None
    burst_seconds: float = 1.0  # the limit buckets hold this many seconds of allowance
    default_max_tokens: int = 256  # charged when a request sets no max_tokens
    p429: float = 0.0
    p500: float = 0.0
    phang: float = 0.0
    pmalformed: float = 0.0
    malformed_marker: str = ""
    malformed_budget: int = 0
    hang_seconds: float = 3600.0
    injected_retry_after: float = 0.2
    answer_chars: int = 200  # length of free-text answers
    seed: int | None = None
    # Authentication: when set, a request whose `Authorization: Bearer KEY` does not hash
    # (SHA-256, hex) to this is answered 401; the key itself never reaches this config.
    key_sha256: str = ""
    # A careless provider: every 401 quotes the credential it was sent (to test redaction).
    echo_rejected_key: bool = False
    lean: bool = False  # answer from pre-encoded bytes (see the module docstring)

    @model_validator(mode="after")
    def _lean_has_no_limits_or_faults(self) -> ServerConfig:
        if self.lean:
            unsupported = [
                name
                for name in ("latency_jitter", "rpm", "tpm", "p429", "p500", "phang", "pmalformed")
                if getattr(self, name)
            ]
            unsupported += ["malformed_marker"] if self.malformed_marker else []
            unsupported += ["key_sha256"] if self.key_sha256 or self.echo_rejected_key else []
            if unsupported:
                raise ValueError(f"lean mode has no {', '.join(unsupported)}")
        return self


class Stats(BaseModel):
    requests: int = 0
    ok: int = 0
    limited_429: int = 0  # 429s from the RPM/TPM limits
    injected_429: int = 0
    injected_500: int = 0
    hangs: int = 0
    malformed: int = 0
    charged_tokens: int = 0  # tokens charged for admitted requests (the TPM meter)
    admitted: int = 0
    peak_concurrency: int = 0
    first_admit: float | None = None
    last_admit: float | None = None
    last_done: float | None = None  # when the last answer was ready (time.monotonic)
    # The first admissions' times and when each was answered (None: not yet, or failed), so a
    # benchmark can tell a client's warm-up probes: requests sent alone, the next one only
    # after the answer.
    early_admits: list[float] = []
    early_done: list[float | None] = []
    # Tokens charged in each second since the first admission (a benchmark's steady state).
    charged_per_second: list[int] = []
    auth_headers_seen: int = 0
    auth_ok: int = 0  # requests whose key matched `key_sha256`
    auth_rejected: int = 0
    # This server process's CPU (user + system) when the stats were read, and its pid; for a
    # server run in a thread, the whole host process's.
    cpu_seconds: float = 0.0
    pid: int = 0


class _Bucket:
    def __init__(self, per_minute: float, burst_seconds: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.t = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def shortfall_s(self, amount: float) -> float:
        self.refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def reset_s(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


def fill_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None, seed: int = 0) -> Any:
    """A value that validates against a (pydantic-generated) JSON schema."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return fill_schema(defs[schema["$ref"].split("/")[-1]], defs, seed)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return fill_schema(options[0], defs, seed)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: fill_schema(v, defs, seed) for k, v in props.items()}
    if kind == "array":
        return [
            fill_schema(schema.get("items", {}), defs, seed)
            for _ in range(max(1, schema.get("minItems", 1)))
        ]
    if kind == "integer":
        lo, hi = schema.get("minimum", 1), schema.get("maximum", 10)
        return int(min(max(7, lo), hi))
    if kind == "number":
        return float(min(max(0.5, schema.get("minimum", 0.0)), schema.get("maximum", 1.0)))
    if kind == "boolean":
        return True
    return "x" * max(8, schema.get("minLength", 0))


class FakeOpenAIServer:
    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.stats = Stats()
        self._rng = random.Random(self.config.seed)
        self._cap = asyncio.Semaphore(self.config.capacity) if self.config.capacity else None
        self._rpm = _Bucket(self.config.rpm, self.config.burst_seconds) if self.config.rpm else None
        self._tpm = _Bucket(self.config.tpm, self.config.burst_seconds) if self.config.tpm else None
        self._active = 0
        self._malformed_left = self.config.malformed_budget
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Lean mode: each request shape's whole HTTP answer; requests waiting for capacity.
        self._answers: dict[bytes, bytes] = {}
        self._waiting: deque[tuple[asyncio.BaseTransport, bytes]] = deque()
        self._transports: set[asyncio.Transport] = set()
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self.config.lean:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _LeanProtocol(self), host, port, backlog=4096
            )
        else:
            self._server = await asyncio.start_server(self._connection, host, port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://{host}:{self.port}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def start_in_thread(self) -> str:
        """Run on its own event loop in a daemon thread; returns the base URL (…/v1)."""
        ready = threading.Event()
        url: list[str] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            url.append(loop.run_until_complete(self.start()))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return url[0]

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # ---------------------------------------------------------------- HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, extra, payload = await self._route(method, path, headers, body)
                writer.write(_http(status, extra, payload))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # client went away, malformed request line, or server shutting down
        finally:
            self._tasks.discard(task)
            writer.close()

    def lean_request(self, transport: asyncio.Transport, head: bytes, body: bytes) -> None:
        """One request split out by `_LeanProtocol`: answered now, or after the latency."""
        method, path, _ = head.split(b" ", 2)
        if method != b"POST" or not path.startswith(b"/v1/chat/completions"):
            status, payload = self._plain(method.decode(), path.decode())
            transport.write(_http(status, {}, payload))
            return
        self.stats.requests += 1
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            transport.write(_http(400, {}, _error("body is not JSON", "invalid_request_error")))
            return
        shape = orjson.dumps(
            [req.get(k) for k in ("model", "n", "response_format", "tools")],
            option=orjson.OPT_SORT_KEYS,
        )
        answer = self._answers.get(shape)
        if answer is None:
            text = "".join(_content_text(m.get("content")) for m in req.get("messages", []))
            payload = self._completion(req, int(req.get("n") or 1), len(text) // 4, False)
            answer = self._answers[shape] = _http(200, {}, payload)
        self.stats.admitted += 1
        if self.config.capacity and self._active >= self.config.capacity:
            self._waiting.append((transport, answer))
        else:
            self._lean_start(transport, answer)

    def _lean_start(self, transport: asyncio.BaseTransport, answer: bytes) -> None:
        self._active += 1
        self.stats.peak_concurrency = max(self.stats.peak_concurrency, self._active)
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.latency, self._lean_finish, transport, answer)

    def _lean_finish(self, transport: asyncio.BaseTransport, answer: bytes) -> None:
        self._active -= 1
        self.stats.ok += 1
        if not transport.is_closing():
            transport.write(answer)  # type: ignore[attr-defined]
        if self._waiting:
            self._lean_start(*self._waiting.popleft())

    def _plain(self, method: str, path: str) -> tuple[int, bytes]:
        """The routes that are not a chat completion."""
        if method == "GET" and path.startswith("/stats"):
            self.stats.cpu_seconds, self.stats.pid = time.process_time(), os.getpid()
            return 200, self.stats.model_dump_json().encode()
        if method == "GET" and path.startswith("/v1/models"):
            return 200, b'{"object":"list","data":[{"id":"fake-model","object":"model"}]}'
        return 404, b'{"error":{"message":"not found","type":"invalid_request_error"}}'

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "POST" and path.startswith("/v1/chat/completions"):
            return await self._chat(headers, body)
        status, payload = self._plain(method, path)
        return status, {}, payload

    async def _chat(
        self, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        cfg = self.config
        st = self.stats
        st.requests += 1
        if "authorization" in headers:
            st.auth_headers_seen += 1
        if cfg.key_sha256 or cfg.echo_rejected_key:
            sent = headers.get("authorization", "")
            token = sent.removeprefix("Bearer ").strip()
            if cfg.key_sha256 and hashlib.sha256(token.encode()).hexdigest() == cfg.key_sha256:
                st.auth_ok += 1
            else:
                st.auth_rejected += 1
                quoted = f": {token}" if cfg.echo_rejected_key else ""
                return 401, {}, _error(f"Incorrect API key provided{quoted}", "invalid_api_key")
        try:
            req = json.loads(body)
        except json.JSONDecodeError:
            return 400, {}, _error("request body is not JSON", "invalid_request_error")
        n = int(req.get("n") or 1)
        max_tokens = (
            req.get("max_completion_tokens") or req.get("max_tokens") or cfg.default_max_tokens
        )
        prompt_text = "".join(_content_text(m.get("content")) for m in req.get("messages", []))
        prompt_tokens = tok.count(prompt_text) if self._tpm else len(prompt_text) // 4
        charge = prompt_tokens + max_tokens * n

        # Limits first, as a provider does on arrival.
        wait = 0.0
        if self._rpm is not None:
            wait = max(wait, self._rpm.shortfall_s(1))
        if self._tpm is not None:
            wait = max(wait, self._tpm.shortfall_s(charge))
        if wait > 0:
            st.limited_429 += 1
            return (
                429,
                self._limit_headers(retry_after=wait),
                _error("Rate limit reached (fake server)", "rate_limit_exceeded"),
            )
        r = self._rng.random()
        if r < cfg.p429:
            st.injected_429 += 1
            return (
                429,
                {"retry-after": f"{cfg.injected_retry_after:g}"},
                _error("injected 429", "rate_limit_exceeded"),
            )
        r -= cfg.p429
        if r < cfg.p500:
            st.injected_500 += 1
            return 500, {}, _error("injected server error", "server_error")
        r -= cfg.p500
        if r < cfg.phang:
            st.hangs += 1
            await asyncio.sleep(cfg.hang_seconds)
            return 504, {}, _error("hung", "server_error")
        r -= cfg.phang
        malformed = r < cfg.pmalformed
        if cfg.malformed_marker and cfg.malformed_marker in prompt_text and self._malformed_left:
            self._malformed_left -= 1
            malformed = True

        if self._rpm is not None:
            self._rpm.level -= 1
        if self._tpm is not None:
            self._tpm.level -= charge
        now = time.monotonic()
        st.admitted += 1
        st.charged_tokens += charge
        st.first_admit = st.first_admit or now
        st.last_admit = now
        index = st.admitted - 1
        if len(st.early_admits) < 64:
            st.early_admits.append(now)
            st.early_done.append(None)
        second = int(now - st.first_admit)
        while len(st.charged_per_second) <= second:
            st.charged_per_second.append(0)
        st.charged_per_second[second] += charge
        if self._cap is not None:
            async with self._cap:
                await self._generate()
        else:
            await self._generate()
        if malformed:
            st.malformed += 1
        st.ok += 1
        st.last_done = time.monotonic()
        if index < len(st.early_done):
            st.early_done[index] = st.last_done
        return 200, self._limit_headers(), self._completion(req, n, prompt_tokens, malformed)

    async def _generate(self) -> None:
        self._active += 1
        self.stats.peak_concurrency = max(self.stats.peak_concurrency, self._active)
        try:
            delay = self.config.latency
            if self.config.latency_jitter:
                delay += self._rng.uniform(-self.config.latency_jitter, self.config.latency_jitter)
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._active -= 1

    def _completion(
        self, req: dict[str, Any], n: int, prompt_tokens: int, malformed: bool
    ) -> bytes:
        schema: dict[str, Any] | None = None
        tool_name: str | None = None
        fmt = req.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            schema = fmt.get("json_schema", {}).get("schema", {})
        elif fmt.get("type") == "json_object":
            schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
        tools = req.get("tools") or []
        if tools:
            fn = tools[0].get("function", {})
            tool_name = fn.get("name", "output")
            schema = fn.get("parameters", {})
        choices = []
        completion_tokens = 0
        for i in range(n):
            if schema is not None:
                text = json.dumps(fill_schema(schema, seed=i))
            else:
                text = ("fake answer " * (self.config.answer_chars // 12 + 1))[
                    : self.config.answer_chars
                ]
            if malformed:
                text = text[: max(1, len(text) // 2)] + "<<not json"
            completion_tokens += len(text) // 4 + 1
            message: dict[str, Any] = {"role": "assistant", "content": text}
            finish = "stop"
            if tool_name is not None:
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"call_{i}",
                            "type": "function",
                            "function": {"name": tool_name, "arguments": text},
                        }
                    ],
                }
                finish = "tool_calls"
            choices.append(
                {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
            )
        out = {
            "id": f"chatcmpl-fake{self.stats.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", "fake-model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return json.dumps(out).encode()

    def _limit_headers(self, retry_after: float | None = None) -> dict[str, str]:
        h: dict[str, str] = {}
        for kind, bucket in (("requests", self._rpm), ("tokens", self._tpm)):
            if bucket is None:
                continue
            bucket.refill()
            h[f"x-ratelimit-limit-{kind}"] = f"{bucket.limit:g}"
            h[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
            h[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset_s():.3f}s"
        if retry_after is not None:
            h["retry-after"] = str(math.ceil(retry_after))
            h["retry-after-ms"] = str(math.ceil(retry_after * 1000))
        return h


class _LeanProtocol(asyncio.Protocol):
    """One keep-alive connection of the lean server: splits requests (head, Content-Length
    body) out of the bytes received and hands each to `FakeOpenAIServer.lean_request`."""

    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[: end + 2])
            try:
                at = head.lower().find(b"\ncontent-length:")
                length = int(head[at + 16 : head.index(b"\r", at + 1)]) if at >= 0 else 0
            except ValueError:  # not HTTP: drop the connection, as the full server does
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.server.lean_request(self.transport, head, body)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    504: "Gateway Timeout",
}


def _http(status: int, extra: dict[str, str], payload: bytes) -> bytes:
    """One whole HTTP/1.1 answer (keep-alive) with a JSON body."""
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
    ]
    head += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def _error(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": kind}}).encode()


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# -------------------------------------------------------------------- subprocess helpers


@contextlib.contextmanager
def serve_in_subprocess(config: ServerConfig) -> Iterator[str]:
    """Start the server in its own process (its own core); yields the base URL (…/v1)."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--port", "0", "--config-json", config.model_dump_json()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line
    finally:
        proc.terminate()
        proc.wait(10)


def fetch_stats(base_url: str) -> Stats:
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/stats", timeout=10) as r:
        return Stats.model_validate_json(r.read())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--config-json", default=None, help="a ServerConfig as JSON")
    for name in ServerConfig.model_fields:  # values are validated (and typed) by ServerConfig
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None)
    args = ap.parse_args()
    cfg = ServerConfig.model_validate_json(args.config_json) if args.config_json else ServerConfig()
    overrides = {
        k: getattr(args, k) for k in ServerConfig.model_fields if getattr(args, k) is not None
    }
    cfg = cfg.model_copy(
        update=ServerConfig.model_validate({**cfg.model_dump(), **overrides}).model_dump()
    )

    async def run() -> None:
        server = FakeOpenAIServer(cfg)
        url = await server.start(args.host, args.port)
        print(url, flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
