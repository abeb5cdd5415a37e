"""Shared benchmark helpers: the backend under test, request builders, RSS, printing.

The backend is the real `realign.llm.openai_backend.OpenAIBackend` (the path users run);
`--backend langchain` the LangChain path, `--backend httpx` a thin httpx client, to separate our
engine's cost from the client library's when a target is missed.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks are scripts, not a package

from realign.llm.base import BackendError, ChatRequest, ChatResponse, Message, Usage
from realign.llm.ratelimit import retry_after_seconds

FAKE_KEY = "sk-benchmark-not-a-real-key"


class ThinHttpxBackend:
    """Minimal OpenAI-compatible backend over one pooled httpx.AsyncClient (development only)."""

    name = "httpx"

    def __init__(
        self, model: str, base_url: str, api_key: str, max_connections: int = 1000
    ) -> None:
        import httpx2 as httpx  # httpcore2 fixed the O(n²) pool of httpcore 1.x

        self.model = model
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=httpx.Timeout(600.0),
        )

    @property
    def backend_id(self) -> str:
        return f"httpx:{self.base_url}:{self.model}"

    @property
    def supports_n(self) -> bool:
        return True

    async def chat(self, request: ChatRequest) -> ChatResponse:
        import httpx2 as httpx  # httpcore2 fixed the O(n²) pool of httpcore 1.x

        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in request.messages],
            "n": request.n,
            "temperature": request.temperature,
        }
        if request.max_tokens:
            body["max_tokens"] = request.max_tokens
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name or "output",
                    "schema": request.json_schema,
                },
            }
        try:
            r = await self._client.post("/chat/completions", json=body)
        except httpx.TransportError as e:
            raise BackendError(f"connection error: {type(e).__name__}", retryable=True) from e
        headers = {
            k: v for k, v in r.headers.items() if k.startswith(("x-ratelimit", "retry-after"))
        }
        if r.status_code != 200:
            raise BackendError(
                f"HTTP {r.status_code}",
                status=r.status_code,
                retryable=r.status_code == 429 or r.status_code >= 500,
                retry_after=retry_after_seconds(headers),
                headers=headers,
            )
        try:
            data = r.json()
        except json.JSONDecodeError as e:
            raise BackendError("response body is not JSON", status=200, retryable=True) from e
        texts = [c["message"]["content"] or "" for c in data["choices"]]
        u = data.get("usage") or {}
        return ChatResponse(
            texts=texts,
            usage=Usage(
                prompt_tokens=u.get("prompt_tokens", 0),
                completion_tokens=u.get("completion_tokens", 0),
            ),
            headers=headers,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class RawOpenAIBackend:
    """`openai.AsyncOpenAI` called directly (no langchain), on httpx2 or on aiohttp."""

    name = "openai-raw"

    def __init__(self, model: str, base_url: str, api_key: str, *, aiohttp: bool = False) -> None:
        import openai

        http_client = openai.DefaultAioHttpClient() if aiohttp else None
        self.model = model
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, http_client=http_client
        )

    @property
    def backend_id(self) -> str:
        return f"openai-raw:{self.base_url}:{self.model}"

    @property
    def supports_n(self) -> bool:
        return True

    async def chat(self, request: ChatRequest) -> ChatResponse:
        import openai

        kwargs: dict[str, Any] = {}
        if request.json_schema is not None:
            fmt = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name or "output",
                    "schema": request.json_schema,
                },
            }
            # The client walks typed params recursively (~2 ms for a schema); `extra_body` is sent
            # as is, which is what an untyped schema needs anyway.
            kwargs["extra_body"] = {"response_format": fmt}
        if request.max_tokens:
            kwargs["max_tokens"] = request.max_tokens
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[m.model_dump() for m in request.messages],  # type: ignore[misc]
                n=request.n,
                temperature=request.temperature,
                **kwargs,
            )
        except openai.APIStatusError as e:
            headers = {
                k: v
                for k, v in e.response.headers.items()
                if k.startswith(("x-ratelimit", "retry-after"))
            }
            raise BackendError(
                f"HTTP {e.status_code}",
                status=e.status_code,
                retryable=e.status_code == 429 or e.status_code >= 500,
                retry_after=retry_after_seconds(headers),
                headers=headers,
            ) from e
        except openai.APIConnectionError as e:
            raise BackendError(f"connection error: {type(e).__name__}", retryable=True) from e
        data = raw.parse()
        headers = {k: v for k, v in raw.headers.items() if k.startswith("x-ratelimit")}
        u = data.usage
        return ChatResponse(
            texts=[c.message.content or "" for c in data.choices],
            usage=Usage(
                prompt_tokens=u.prompt_tokens if u else 0,
                completion_tokens=u.completion_tokens if u else 0,
            ),
            headers=headers,
        )

    async def aclose(self) -> None:
        await self._client.close()


BACKENDS = ["real", "real-httpx", "langchain", "openai", "openai-aiohttp", "httpx"]


def make_backend(kind: str, base_url: str, model: str = "gpt-4o-mini") -> Any:
    """`real` → realign's OpenAIBackend (what users run: direct HTTP on aiohttp); `real-httpx`
    the same over an httpx client; `langchain` → LangChainBackend (`--backend langchain`,
    ChatOpenAI on openai's aiohttp transport); others isolate client-library costs."""
    if kind == "httpx":
        return ThinHttpxBackend(model, base_url, FAKE_KEY)
    if kind in ("openai", "openai-aiohttp"):
        return RawOpenAIBackend(model, base_url, FAKE_KEY, aiohttp=kind == "openai-aiohttp")
    if kind == "langchain":
        from realign.llm.langchain_backend import LangChainBackend

        return LangChainBackend(model=model, base_url=base_url, api_key=FAKE_KEY)
    from realign.llm.openai_backend import OpenAIBackend

    if kind == "real-httpx":
        import httpx

        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        return OpenAIBackend(
            model=model,
            base_url=base_url,
            api_key=FAKE_KEY,
            http_async_client=httpx.AsyncClient(limits=limits),
        )
    return OpenAIBackend(model=model, base_url=base_url, api_key=FAKE_KEY)


class Label(BaseModel):
    """A small structured output, like the classify stage's."""

    task_type: str
    confidence: float
    reason: str


def make_request(
    i: int, *, stage: str = "classify", prompt_words: int = 120, max_tokens: int | None = 64
) -> ChatRequest:
    text = f"record {i}: " + " ".join(f"word{(i * 7 + k) % 997}" for k in range(prompt_words))
    return ChatRequest(
        stage=stage,
        messages=[
            Message(role="system", content="Classify the instruction."),
            Message(role="user", content=text),
        ],
        max_tokens=max_tokens,
        record_id=str(i),
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process (the client), to judge results on a busy machine."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def process_tree_cpu(root: int | None = None) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of each live process from `root` (default: this
    one) down, read from /proc (Linux): a Ray driver's tree holds Ray's daemons, its workers
    and actors, and the servers it started."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, …
        children.setdefault(int(fields[1]), []).append(int(entry))
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree: dict[int, float] = {}
    todo = [root or os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            tree[pid] = cpu[pid]
        todo += children.get(pid, [])
    return tree


def machine_busy_seconds() -> float:
    """Busy CPU seconds of all cores since boot, from /proc/stat: the difference of two readings
    over the wall time between them is how many cores were busy (ours and everyone else's)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def row(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<34} {value:>16}  {target}")
