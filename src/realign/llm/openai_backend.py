"""OpenAI and every OpenAI-compatible server (vLLM, llama.cpp, Ollama, …): the default path.

One `OpenAIBackend.chat` = one HTTP POST of JSON built here (`openai_wire`) over one shared
aiohttp session per backend and event loop, the answer parsed with orjson: no client library
in between, so a request costs well under a millisecond of our CPU (benchmarks/overhead.py).
The body is the one LangChain's `ChatOpenAI` sends (`tests/test_backend_payload.py`); the
LangChain path stays available as `--backend langchain` (`llm/langchain_backend.py`), for any
LangChain chat model. The engine owns retries: every failure becomes a `BackendError` that
says whether a retry can help (`openai_errors`), the key never shown.

Structured-output methods:
- `json_schema`: OpenAI Structured Outputs (strict); default for api.openai.com.
- `function_calling`: a forced tool call; the portable choice, and the one llama.cpp's
  server constrains with a grammar built from the schema (vLLM does too). Default for every
  other base URL.
- `json_mode`: `response_format={"type": "json_object"}`: valid JSON, schema not enforced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlparse

from pydantic import SecretStr

from realign.credentials import remember
from realign.llm import openai_wire as wire
from realign.llm.base import BackendError, ChatRequest, ChatResponse, Usage
from realign.llm.openai_errors import (
    OPENAI_BASE_URL,
    error_code,
    kept_headers,
    map_status_error,
    map_transport_error,
    scrub,
    server_message,
)

if TYPE_CHECKING:
    import aiohttp
    import httpx

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]
STRUCTURED_METHODS: tuple[str, ...] = get_args(StructuredMethod)
DEFAULT_TIMEOUT_S = 120.0
# Sent when a base URL is configured without a key: clients insist on one, local servers
# ignore it.
NO_KEY = "sk-no-key"
MAX_CONNECTIONS = 1000  # the engine bounds requests in flight; this only caps a runaway


def is_openai_url(base_url: str | None) -> bool:
    return base_url is None or urlparse(base_url).hostname == "api.openai.com"


def default_structured_method(base_url: str | None) -> StructuredMethod:
    return "json_schema" if is_openai_url(base_url) else "function_calling"


class KeyedBackend:
    """What both OpenAI-compatible backends share: their name, model and endpoint, the
    structured-output method, and the API key, held so that nothing prints it."""

    _supports_n: bool  # the server answers `n` choices in one request (set by each backend)

    def _setup(
        self,
        *,
        name: str,
        model: str,
        base_url: str | None,
        api_key: str | None,
        structured_method: StructuredMethod | None,
        timeout: float,
        key_source: str,
    ) -> None:
        if structured_method is not None and structured_method not in STRUCTURED_METHODS:
            raise ValueError(
                f"structured_method must be one of {', '.join(STRUCTURED_METHODS)}, "
                f"not {structured_method!r}"
            )
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        # SecretStr: a traceback, a log line or Ray's view of this object never shows it.
        self._secret = SecretStr(api_key) if api_key else None
        remember(api_key)
        self._key_source = key_source  # where the key came from, for a 401's message
        self.structured_method: StructuredMethod = structured_method or default_structured_method(
            self.base_url
        )
        self.timeout = timeout

    def __repr__(self) -> str:  # never shows the key
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, "
            f"method={self.structured_method!r})"
        )

    __str__ = __repr__

    @property
    def supports_n(self) -> bool:
        return self._supports_n

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """One request, or `n` single-answer requests where the server ignores `n` (llama.cpp,
        Ollama), their answers joined as one response."""
        if request.n > 1 and not self._supports_n:
            parts = await asyncio.gather(*(self._one_call(request, 1) for _ in range(request.n)))
            return ChatResponse(
                texts=[t for p in parts for t in p.texts],
                finish_reasons=[r for p in parts for r in p.finish_reasons],
                usage=Usage(
                    prompt_tokens=sum(p.usage.prompt_tokens for p in parts),
                    completion_tokens=sum(p.usage.completion_tokens for p in parts),
                ),
                headers=parts[-1].headers,
            )
        return await self._one_call(request, request.n)

    async def _one_call(self, request: ChatRequest, n: int) -> ChatResponse:
        raise NotImplementedError

    @property
    def _api_key(self) -> str | None:
        """The key itself, for the request and for masking it in error messages."""
        return self._secret.get_secret_value() if self._secret is not None else None


class OpenAIBackend(KeyedBackend):
    """The OpenAI chat-completions API over plain HTTP, behind the realign `Backend` protocol.

    `http_async_client`: post through this httpx client instead of the backend's own aiohttp
    session (tests hand in `httpx.MockTransport`s; the caller closes it unless `aclose`)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        structured_method: StructuredMethod | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        supports_n: bool | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        trust_env: bool = True,
        name: str = "openai",
        key_source: str = "",
    ) -> None:
        self._setup(
            name=name,
            model=model,
            base_url=base_url,
            api_key=api_key,
            structured_method=structured_method,
            timeout=timeout,
            key_source=key_source,
        )
        # OpenAI returns n choices per request; vLLM does too, but llama.cpp and Ollama
        # silently return one, so other servers get n requests unless told otherwise.
        self._supports_n = is_openai_url(self.base_url) if supports_n is None else supports_n
        self._openai_url = is_openai_url(self.base_url)
        self._url = f"{self.base_url or OPENAI_BASE_URL}/chat/completions"
        self._headers = {
            "authorization": f"Bearer {api_key or NO_KEY}",
            "content-type": "application/json",
            "accept": "application/json",
        }
        self._http_client = http_async_client
        self._trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        self._yarl_url: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._structured: dict[bytes, dict[str, Any]] = {}

    @property
    def backend_id(self) -> str:
        return (
            f"{self.name}:{self.base_url or OPENAI_BASE_URL}:{self.model}:{self.structured_method}"
        )

    def _structured_params(self, request: ChatRequest) -> dict[str, Any] | None:
        if request.json_schema is None:
            return None
        name = request.schema_name or request.json_schema.get("title") or "Output"
        key = wire.dumps([name, request.json_schema])  # a few µs; building is ~100x that
        params = self._structured.get(key)
        if params is None:
            params = wire.structured_params(request.json_schema, name, self.structured_method)
            self._structured[key] = params
        return params

    async def _one_call(self, request: ChatRequest, n: int) -> ChatResponse:
        body = wire.dumps(
            wire.request_body(
                self.model,
                request,
                n,
                openai_url=self._openai_url,
                structured=self._structured_params(request),
            )
        )
        status, headers, raw = await self._post(body)
        if status >= 400:
            data = _json_or_none(raw)
            says = server_message(data) or raw[:500].decode("utf-8", "replace")
            raise self._status_error(status, headers, says, error_code(data))
        data = _json_or_none(raw)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            says = server_message(data) or raw[:300].decode("utf-8", "replace")
            raise BackendError(
                scrub(f"unexpected answer from {self._where}: {says}", self._api_key),
                retryable=True,
            )
        method = self.structured_method if request.json_schema is not None else None
        usage = wire.usage_of(data)
        return ChatResponse(
            texts=wire.answer_texts(data, method),
            finish_reasons=wire.finish_reasons(data, n, request.max_tokens, usage),
            usage=usage,
            headers=kept_headers(headers),
        )

    @property
    def _where(self) -> str:
        return self.base_url or OPENAI_BASE_URL

    def _status_error(
        self, status: int, headers: Mapping[str, str], says: str, code: str | None
    ) -> BackendError:
        return map_status_error(
            status,
            headers,
            says,
            code,
            base_url=self.base_url,
            model=self.model,
            api_key=self._api_key,
            key_source=self._key_source,
        )

    async def _post(self, body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        """(status, headers, body) of the answer; transport failures as BackendErrors."""
        try:
            if self._http_client is not None:
                r = await self._http_client.post(
                    self._url, content=body, headers=self._headers, timeout=self.timeout
                )
                return r.status_code, r.headers, r.content
            session = self._aiohttp()
            async with session.post(
                self._yarl_url, data=body, headers=self._headers, proxy=self._proxy
            ) as resp:
                return resp.status, resp.headers, await resp.read()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if _is_transport_error(e):
                raise map_transport_error(
                    e, base_url=self.base_url, api_key=self._api_key, timeout=self.timeout
                ) from None
            msg = f"unexpected error from {self._where}: {type(e).__name__}: {e}"
            raise BackendError(scrub(msg, self._api_key), retryable=False) from None

    def _aiohttp(self) -> aiohttp.ClientSession:
        """The session for the running event loop. Pooled connections belong to the loop that
        opened them: after a second `asyncio.run()` the old session is dropped (detached, its
        connections left to the dead loop) and a new one opened."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp
            import yarl

            if self._session is not None and not self._session.closed:
                self._session.detach()
            # The proxy settings are read once here: aiohttp's own `trust_env` looks them (and
            # ~/.netrc) up in a worker thread on every request (~0.2 ms each).
            self._proxy = env_proxy(self._url) if self._trust_env else None
            # The engine bounds every request with its own timeout (120 s for hosted servers,
            # = DEFAULT_TIMEOUT_S), so at the default only opening a connection gets a timer
            # of aiohttp's: a `total` timeout arms a second timer per request (~5% of the
            # client's CPU at hundreds of requests/s). A shorter timeout asked for is kept.
            total = self.timeout if self.timeout < DEFAULT_TIMEOUT_S else None
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=total, sock_connect=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),  # an API sets no cookies worth keeping
            )
            self._yarl_url = yarl.URL(self._url)  # parsed once, not per request
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()
        elif session is not None:
            session.detach()
        client, self._http_client = self._http_client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) sets for
    `url`, or None."""
    import urllib.request

    parts = urlparse(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _json_or_none(raw: bytes) -> Any:
    try:
        return wire.loads(raw) if raw else None
    except ValueError:
        return None


def _is_transport_error(e: BaseException) -> bool:
    """No HTTP answer at all: a timeout, an OS-level failure, or the client's own
    transport exception (aiohttp.ClientError, httpx.TransportError)."""
    if isinstance(e, TimeoutError | OSError):
        return True
    module = type(e).__module__.split(".")[0]
    if module == "aiohttp":
        import aiohttp

        return isinstance(e, aiohttp.ClientError)
    if module in ("httpx", "httpx_aiohttp"):
        import httpx

        return isinstance(e, httpx.TransportError)
    return False
