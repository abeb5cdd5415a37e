"""The LangChain path (`--backend langchain`): any LangChain chat model as a realign backend.

By default a `ChatOpenAI` on the configured OpenAI-compatible server (the same settings as the
`openai` backend, whose lean HTTP path is the default: see `llm/openai_backend.py`); from
Python, any LangChain chat model: `LangChainBackend(chat_model=ChatAnthropic(...))`, which is
how users of providers without an OpenAI-compatible endpoint plug in.

One `chat` = one model call (or n of them when the model cannot return n choices at once);
the engine owns retries, so ChatOpenAI never retries on its own (`max_retries=0`) and every
failure becomes a `BackendError` that says whether a retry can help. Structured requests go
through `with_structured_output` built from the request's JSON schema; the answer is handed
back as JSON *text* so that the engine validates it with pydantic and re-asks with the
validation error when it does not fit. Structured-output methods as in `openai_backend`.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, cast

import httpx
import openai

from realign.llm import langchain_fixes
from realign.llm.base import BackendError, ChatRequest, ChatResponse, Message
from realign.llm.openai_backend import (
    DEFAULT_TIMEOUT_S,
    NO_KEY,
    KeyedBackend,
    StructuredMethod,
    is_openai_url,
)
from realign.llm.openai_errors import OPENAI_BASE_URL, kept_headers, map_openai_error
from realign.llm.openai_schemas import strict_schema, tool_schema

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable


def default_http_client(trust_env: bool = True) -> httpx.AsyncClient:
    """openai's aiohttp transport when `aiohttp` is installed (`openai[aiohttp]`), else its
    httpx one. At hundreds of requests in flight the httpx connection pool scans every pooled
    connection on each request; against benchmarks/fake_openai_server.py aiohttp cuts the
    client's CPU per request by ~40% (benchmarks/overhead.py: `real` vs `real-httpx`)."""
    try:
        return cast(httpx.AsyncClient, openai.DefaultAioHttpClient(trust_env=trust_env))
    except RuntimeError:  # "… you must have installed the package with the `aiohttp` extra"
        return cast(httpx.AsyncClient, openai.DefaultAsyncHttpxClient(trust_env=trust_env))


class LangChainBackend(KeyedBackend):
    """A LangChain chat model behind the realign `Backend` protocol: `ChatOpenAI` on
    `base_url` (default), or the `chat_model` given."""

    def __init__(
        self,
        model: str = "",
        base_url: str | None = None,
        api_key: str | None = None,
        structured_method: StructuredMethod | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        supports_n: bool | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        trust_env: bool = True,
        name: str = "langchain",
        key_source: str = "",
        chat_model: BaseChatModel | None = None,
    ) -> None:
        # A model of another provider: named by its class (part of the cache key).
        self._given: BaseChatModel | None = chat_model
        self._setup(
            name=name,
            model=model or (_model_name(chat_model) if chat_model is not None else ""),
            base_url=base_url,
            api_key=api_key,
            structured_method=structured_method,
            timeout=timeout,
            key_source=key_source,
        )
        # OpenAI returns n choices per request; vLLM does too, but llama.cpp and Ollama
        # silently return one, so other servers get n requests unless told otherwise.
        if supports_n is None:
            supports_n = chat_model is None and is_openai_url(self.base_url)
        self._supports_n = supports_n
        self._http_client = http_async_client
        self._owns_client = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._trust_env = trust_env
        self._llm: BaseChatModel | None = chat_model
        self._structured: dict[str, tuple[dict[str, Any], Runnable[Any, Any]]] = {}

    @property
    def backend_id(self) -> str:
        """ChatOpenAI sends the same body as the `openai` backend to the same server, so it
        shares its cache keys (switching paths re-pays nothing); another provider's model is
        named by its class."""
        if self._given is not None:
            return f"langchain:{type(self._given).__name__}:{self.model}:{self.structured_method}"
        return f"openai:{self.base_url or OPENAI_BASE_URL}:{self.model}:{self.structured_method}"

    def _chat_model(self) -> BaseChatModel:
        if self._given is not None:
            return self._given
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

    async def _one_call(self, request: ChatRequest, n: int) -> ChatResponse:
        llm = self._chat_model()
        kwargs: dict[str, Any] = {"temperature": request.temperature}
        if n > 1:
            kwargs["n"] = n
        if request.max_tokens is not None and self._given is not None:
            kwargs["max_tokens"] = request.max_tokens  # what most providers' models take
        elif request.max_tokens is not None:
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
        # Chat models return ChatGenerations (typed as the Generation union).
        texts = [
            langchain_fixes.answer_text(g.message, parser)  # type: ignore[union-attr]
            for g in generations
        ]
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
        self._llm = self._given
        self._structured.clear()
        if client is not None and self._loop in (None, asyncio.get_running_loop()):
            await client.aclose()

    async def __aenter__(self) -> LangChainBackend:
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


def _model_name(chat_model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(chat_model).__name__
