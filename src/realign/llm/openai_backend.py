"""OpenAI and every OpenAI-compatible server (vLLM, llama.cpp, Ollama, …) through LangChain.

One `OpenAIBackend.chat` = one HTTP request (or n of them when the server cannot return n
choices at once); the engine owns retries, so the client never retries on its own
(`max_retries=0`) and every failure becomes a `BackendError` that says whether a retry can
help. Structured requests go through `ChatOpenAI.with_structured_output` built from the
request's JSON schema; the answer is handed back as JSON *text* so that the engine validates
it with pydantic and re-asks with the validation error when it does not fit.

Structured-output methods:
- `json_schema`: OpenAI Structured Outputs (strict); default for api.openai.com.
- `function_calling`: a forced tool call; the portable choice, and the one llama.cpp's
  server constrains with a grammar built from the schema (vLLM does too). Default for every
  other base URL.
- `json_mode`: `response_format={"type": "json_object"}`: valid JSON, schema not enforced.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlparse

import httpx
import openai

from realign.llm import langchain_fixes
from realign.llm.base import BackendError, ChatRequest, ChatResponse, Message, Usage
from realign.llm.ratelimit import retry_after_seconds

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable
    from langchain_openai import ChatOpenAI

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]
STRUCTURED_METHODS: tuple[str, ...] = get_args(StructuredMethod)
OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_S = 120.0
# Sent when a base URL is configured without a key: the client insists on one, local
# servers ignore it.
NO_KEY = "sk-no-key"
# Headers worth keeping with a response (the engine caches responses: keep them small).
KEPT_HEADERS = re.compile(r"^(x-ratelimit-.*|retry-after(-ms)?|x-request-id|openai-processing-ms)$")
# Keywords OpenAI strict mode may reject; the engine validates them with pydantic anyway.
_STRICT_DROP = {
    "default",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
}
_SUBSCHEMA_KEYS = {"items", "anyOf", "oneOf", "allOf", "prefixItems", "not"}
_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{6,}|Bearer\s+\S+)")


def is_openai_url(base_url: str | None) -> bool:
    return base_url is None or urlparse(base_url).hostname == "api.openai.com"


def default_structured_method(base_url: str | None) -> StructuredMethod:
    return "json_schema" if is_openai_url(base_url) else "function_calling"


# ---------------------------------------------------------------- schemas (pure functions)


def tool_schema(json_schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The request's schema, `$ref`s inlined, titled `name` (LangChain takes the title as the
    tool / response-format name; llama.cpp's grammar builder and strict mode both prefer
    schemas without `$defs`)."""
    from langchain_core.utils.json_schema import dereference_refs

    schema = dereference_refs(copy.deepcopy(json_schema))
    schema.pop("$defs", None)
    schema.pop("definitions", None)
    schema["title"] = _safe_name(name)
    return schema


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy that OpenAI strict mode accepts: every object closed with all its properties
    required, validation-only keywords dropped (the engine still validates them)."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _STRICT_DROP:
                continue
            if key in ("properties", "$defs", "definitions", "patternProperties"):
                out[key] = {k: walk(v) for k, v in value.items()}  # names, not keywords
            elif key in _SUBSCHEMA_KEYS or (
                key == "additionalProperties" and isinstance(value, dict)
            ):
                out[key] = walk(value)
            else:
                out[key] = value
        if out.get("type") == "object" or "properties" in out:
            out["required"] = list(out.get("properties", {}))
            out["additionalProperties"] = False
        return out

    return walk(schema)


def _safe_name(name: str) -> str:
    # OpenAI tool / schema names: ^[a-zA-Z0-9_-]{1,64}$
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "Output"


# ---------------------------------------------------------------- errors (pure functions)


def scrub(text: str, api_key: str | None = None) -> str:
    """`text` with the API key (and anything that looks like one) masked."""
    if api_key and len(api_key) >= 4:
        text = text.replace(api_key, "***")
    return _KEY_PATTERN.sub("***", text)


def kept_headers(headers: httpx.Headers | dict[str, Any] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {k.lower(): str(v) for k, v in dict(headers).items() if KEPT_HEADERS.match(k.lower())}


def map_openai_error(
    e: BaseException,
    *,
    base_url: str | None,
    model: str,
    api_key: str | None = None,
    timeout: float | None = None,
    key_source: str = "",
) -> BackendError:
    """An exception raised by the openai client (directly or through LangChain) as a
    BackendError the engine can act on. Messages never carry the API key. `api_key`: the key
    sent (None: none was); `key_source` says where it came from, for a 401."""
    where = base_url or OPENAI_BASE_URL

    def err(msg: str, **kw: Any) -> BackendError:
        return BackendError(scrub(msg, api_key), **kw)

    if isinstance(e, openai.APIConnectionError):  # APITimeoutError included
        # openai's aiohttp transport reports a refused connection as a *timeout*
        # (ConnectTimeout caused by ConnectionRefusedError): the cause says what happened.
        causes = _causes(e)
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return err(
                f"the server at {where} refused the connection: is it running, and is the "
                "URL's port right?",
                retryable=True,
            )
        if any(isinstance(c, socket.gaierror) for c in causes):
            return err(f"cannot connect to {where}: its host name does not resolve", retryable=True)
        refused = next((c for c in causes if _is_connect_failure(c)), None)
        if isinstance(e, openai.APITimeoutError) and refused is None:
            return err(f"request to {where} timed out after {timeout or '?'}s", retryable=True)
        cause = refused or e.__cause__ or e.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        return err(f"cannot connect to {where}{detail}", retryable=True)
    if not isinstance(e, openai.APIStatusError):
        return err(f"unexpected error from {where}: {type(e).__name__}: {e}", retryable=False)

    status = e.status_code
    headers = kept_headers(e.response.headers)
    server_says = _server_message(e)
    common: dict[str, Any] = {"status": status, "headers": headers}
    if status == 429:
        if "insufficient_quota" in server_says or getattr(e, "code", None) == "insufficient_quota":
            return err(
                f"429 from {where}: the account has no quota left (billing), retrying cannot "
                f"help: {server_says}",
                retryable=False,
                **common,
            )
        return err(
            f"429 rate limited by {where}: {server_says}",
            retryable=True,
            retry_after=retry_after_seconds(e.response.headers),
            **common,
        )
    if status == 500 and "validation error" in server_says:
        # llama.cpp's server answers a request it cannot parse with 500, not 422.
        return err(f"{status} from {where}: request rejected: {server_says}", **common)
    if status >= 500 or status in (408, 409):
        return err(
            f"{status} server error from {where} (transient, will retry): {server_says}",
            retryable=True,
            retry_after=retry_after_seconds(e.response.headers),
            **common,
        )
    if status == 401:
        if api_key:  # a key was sent: it is the key that is wrong, not its absence
            source = f" ({key_source})" if key_source else ""
            hint = (
                f"the server rejected the API key{source}: check that OPENAI_API_KEY or "
                "api_key in $REALIGN_HOME/config.toml holds a valid key for this server"
            )
        else:
            hint = (
                f"the server at {where} wants an API key and none was sent: set "
                "OPENAI_API_KEY or api_key in $REALIGN_HOME/config.toml"
            )
        return err(f"401 unauthorized at {where}: {hint}. Server said: {server_says}", **common)
    if status == 403:
        return err(
            f"403 forbidden at {where}: the key has no access to model '{model}' or this "
            f"endpoint. Server said: {server_says}",
            **common,
        )
    if status == 404:
        return err(
            f"404 at {where}: model '{model}' not found, or the base URL is wrong (it usually "
            f"ends in /v1). Server said: {server_says}",
            **common,
        )
    return err(f"{status} from {where} (request rejected): {server_says}", **common)


def _causes(e: BaseException) -> list[BaseException]:
    """`e`'s chain of causes, outermost first."""
    out: list[BaseException] = []
    cause = e.__cause__ or e.__context__
    while cause is not None and cause not in out:
        out.append(cause)
        cause = cause.__cause__ or cause.__context__
    return out


def _is_connect_failure(exc: BaseException) -> bool:
    """An OS-level failure to connect (reset, unreachable, …), as opposed to a timeout."""
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.errno is not None


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        detail = body.get("detail")  # FastAPI servers (llama.cpp) use {"detail": …}
        if detail:
            return json.dumps(detail)[:500]
    return str(e.message)[:500]


# ---------------------------------------------------------------- the backend


def default_http_client(trust_env: bool = True) -> httpx.AsyncClient:
    """openai's aiohttp transport when `aiohttp` is installed (`openai[aiohttp]`), else its
    httpx one. At hundreds of requests in flight the httpx connection pool scans every pooled
    connection on each request; against benchmarks/fake_openai_server.py aiohttp cuts the
    client's CPU per request by ~40% (benchmarks/overhead.py: `real` vs `real-httpx`)."""
    try:
        return openai.DefaultAioHttpClient(trust_env=trust_env)  # type: ignore[no-any-return]
    except RuntimeError:  # "… you must have installed the package with the `aiohttp` extra"
        return openai.DefaultAsyncHttpxClient(trust_env=trust_env)  # type: ignore[no-any-return]


class OpenAIBackend:
    """`ChatOpenAI` behind the realign `Backend` protocol."""

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
        if structured_method is not None and structured_method not in STRUCTURED_METHODS:
            raise ValueError(
                f"structured_method must be one of {', '.join(STRUCTURED_METHODS)}, "
                f"not {structured_method!r}"
            )
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self._api_key = api_key
        self._key_source = key_source  # where the key came from, for a 401's message
        self.structured_method: StructuredMethod = structured_method or default_structured_method(
            self.base_url
        )
        self.timeout = timeout
        # OpenAI returns n choices per request; vLLM does too, but llama.cpp and Ollama
        # silently return one, so other servers get n requests unless told otherwise.
        self._supports_n = is_openai_url(self.base_url) if supports_n is None else supports_n
        self._http_client = http_async_client
        self._owns_client = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._trust_env = trust_env
        self._llm: ChatOpenAI | None = None
        self._structured: dict[str, tuple[dict[str, Any], Runnable[Any, Any]]] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, method={self.structured_method!r})"

    @property
    def backend_id(self) -> str:
        return (
            f"{self.name}:{self.base_url or OPENAI_BASE_URL}:{self.model}:{self.structured_method}"
        )

    @property
    def supports_n(self) -> bool:
        return self._supports_n

    def _chat_model(self) -> ChatOpenAI:
        loop = asyncio.get_running_loop()
        if self._llm is not None and self._loop is not loop and self._owns_client:
            # Pooled connections belong to the loop that opened them; that loop is gone
            # (a second asyncio.run()), so start over with a fresh client.
            self._llm, self._http_client = None, None
            self._structured.clear()
        if self._llm is None:
            if self._http_client is None:
                # Our own client per backend instance and event loop (see
                # langchain_fixes.chat_model).
                self._http_client = default_http_client(self._trust_env)
                self._owns_client = True
            self._loop = loop
            self._llm = langchain_fixes.chat_model(
                model=self.model,
                base_url=self.base_url or OPENAI_BASE_URL,
                api_key=self._api_key or NO_KEY,
                timeout=self.timeout,
                http_client=self._http_client,
            )
        return self._llm

    def _structured_parts(self, request: ChatRequest) -> tuple[dict[str, Any], Runnable[Any, Any]]:
        """(request kwargs, output parser) that `with_structured_output` builds for the schema."""
        assert request.json_schema is not None
        name = request.schema_name or request.json_schema.get("title") or "Output"
        key = json.dumps([name, request.json_schema], sort_keys=True)
        if key not in self._structured:
            schema: dict[str, Any] = tool_schema(request.json_schema, name)
            if self.structured_method == "json_schema":
                schema = {"name": schema["title"], "schema": strict_schema(schema), "strict": True}
            self._structured[key] = langchain_fixes.structured_parts(
                self._chat_model(), schema, self.structured_method
            )
        return self._structured[key]

    async def chat(self, request: ChatRequest) -> ChatResponse:
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
        llm = self._chat_model()
        kwargs: dict[str, Any] = {"temperature": request.temperature}
        if n > 1:
            kwargs["n"] = n
        if request.max_tokens is not None:
            kwargs.update(
                langchain_fixes.max_tokens_kwargs(request.max_tokens, is_openai_url(self.base_url))
            )
        parser: Runnable[Any, Any] | None = None
        if request.json_schema is not None:
            bound_kwargs, parser = self._structured_parts(request)
            kwargs.update(bound_kwargs)
        try:
            result = await llm.agenerate([to_langchain(request.messages)], **kwargs)
        except Exception as e:
            raise map_openai_error(
                e,
                base_url=self.base_url,
                model=self.model,
                api_key=self._api_key,
                timeout=self.timeout,
                key_source=self._key_source,
            ) from None
        generations = result.generations[0]
        texts = [langchain_fixes.answer_text(g.message, parser) for g in generations]
        info = (generations[0].generation_info or {}) if generations else {}
        usage = langchain_fixes.usage_of(result.llm_output, generations)
        return ChatResponse(
            texts=texts,
            finish_reasons=langchain_fixes.finish_reasons(
                generations, n, request.max_tokens, usage
            ),
            usage=usage,
            headers=kept_headers(info.get("headers")),
        )

    async def aclose(self) -> None:
        client, self._http_client = self._http_client, None
        self._llm = None
        self._structured.clear()
        if client is not None and self._loop in (None, asyncio.get_running_loop()):
            await client.aclose()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def to_langchain(messages: list[Message]) -> list[BaseMessage]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out: list[BaseMessage] = []
    for m in messages:
        if m.role not in kinds:
            raise BackendError(f"unknown message role {m.role!r} (system, user or assistant)")
        out.append(kinds[m.role](content=m.content))
    return out
