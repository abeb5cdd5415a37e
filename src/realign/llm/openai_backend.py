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
import functools
import json
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlparse

import httpx
import openai

from realign.llm.base import BackendError, ChatRequest, ChatResponse, Message, Usage
from realign.llm.openai_errors import OPENAI_BASE_URL, kept_headers, map_openai_error
from realign.llm.openai_schemas import strict_schema, tool_schema

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable
    from langchain_openai import ChatOpenAI

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]
STRUCTURED_METHODS: tuple[str, ...] = get_args(StructuredMethod)
DEFAULT_TIMEOUT_S = 120.0
# Sent when a base URL is configured without a key: the client insists on one, local
# servers ignore it.
NO_KEY = "sk-no-key"


def is_openai_url(base_url: str | None) -> bool:
    return base_url is None or urlparse(base_url).hostname == "api.openai.com"


def default_structured_method(base_url: str | None) -> StructuredMethod:
    return "json_schema" if is_openai_url(base_url) else "function_calling"


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
            chat_openai = _chat_openai_class()

            if self._http_client is None:
                # Our own client per backend instance and event loop: langchain-openai
                # otherwise shares one cached client per base URL, which breaks on the
                # second asyncio.run().
                self._http_client = default_http_client(self._trust_env)
                self._owns_client = True
            self._loop = loop
            self._llm = chat_openai(
                model=self.model,
                # Explicit, so ChatOpenAI never falls back to OPENAI_BASE_URL on its own.
                base_url=self.base_url or OPENAI_BASE_URL,
                api_key=self._api_key or NO_KEY,
                max_retries=0,
                timeout=self.timeout,
                include_response_headers=True,
                http_async_client=self._http_client,
                use_responses_api=False,  # chat completions: what compatible servers speak
                stream_usage=False,
            )
        return self._llm

    def _structured_parts(self, request: ChatRequest) -> tuple[dict[str, Any], Runnable[Any, Any]]:
        """(request kwargs, output parser) that `with_structured_output` builds for the schema."""
        assert request.json_schema is not None
        name = request.schema_name or request.json_schema.get("title") or "Output"
        key = json.dumps([name, request.json_schema], sort_keys=True)
        if key not in self._structured:
            schema: dict[str, Any] = tool_schema(request.json_schema, name)
            kwargs: dict[str, Any] = {"method": self.structured_method}
            if self.structured_method == "json_schema":
                schema = {"name": schema["title"], "schema": strict_schema(schema), "strict": True}
            runnable = self._chat_model().with_structured_output(schema, **kwargs)
            # `llm | parser`: keep the bound request kwargs and the parser, so that one call
            # can return all n choices (ainvoke would keep only the first).
            bound, parser = runnable.first, runnable.last  # type: ignore[attr-defined]
            bound_kwargs = {
                k: v for k, v in bound.kwargs.items() if k != "ls_structured_output_format"
            }
            self._structured[key] = (bound_kwargs, parser)
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
            if is_openai_url(self.base_url):
                kwargs["max_tokens"] = request.max_tokens  # sent as max_completion_tokens
            else:
                # ChatOpenAI renames max_tokens to max_completion_tokens, which llama.cpp's
                # server (and older OpenAI-compatible servers) silently ignore.
                kwargs["extra_body"] = {"max_tokens": request.max_tokens}
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
        texts = [_answer_text(g.message, parser) for g in generations]
        info = (generations[0].generation_info or {}) if generations else {}
        usage = _usage(result.llm_output, generations)
        reasons = [(g.generation_info or {}).get("finish_reason") for g in generations]
        if n == 1 and request.max_tokens and usage.completion_tokens >= request.max_tokens:
            # llama-cpp-python reports a forced tool call as "tool_calls" even when max_tokens
            # cut its arguments off; one answer that used the whole budget was cut.
            reasons = ["length"] * len(reasons)
        return ChatResponse(
            texts=texts,
            finish_reasons=reasons,
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


# Request parameters LangChain builds as plain JSON that the openai client would walk again.
_PASSED_AS_IS = ("messages", "tools", "tool_choice")


@functools.cache
def _chat_openai_class() -> type[ChatOpenAI]:
    """`ChatOpenAI`, handing the messages and tools LangChain built to the client as they are.

    The openai client walks every request parameter against its TypedDicts before sending
    (aliases, date and file formats), trying each member of the message-type union in turn:
    ~0.6 ms per request for two messages and one tool, a third of the client's CPU at
    hundreds of requests/s. What LangChain built here is plain JSON already (`messages`
    from `_convert_message_to_dict`, `tools` / `tool_choice` from `with_structured_output`),
    so it goes in `extra_body`, which the client merges into the body untouched: the JSON on
    the wire is the same (tests/test_backend_payload.py compares it with stock `ChatOpenAI`).
    A parameter that is not plain JSON takes the client's usual path."""
    from langchain_openai import ChatOpenAI

    class PlainJSONChatOpenAI(ChatOpenAI):
        def _get_request_payload(
            self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
            as_is = {k: payload[k] for k in _PASSED_AS_IS if k in payload}
            if as_is and all(_plain_json(v) for v in as_is.values()):
                payload["extra_body"] = {**(payload.get("extra_body") or {}), **as_is}
                for k in as_is:
                    del payload[k]
                payload["messages"] = []  # required by the client; replaced by extra_body
            return payload

    return PlainJSONChatOpenAI


def _plain_json(value: Any) -> bool:
    """Only dicts with string keys, lists, strings, numbers, booleans and None."""
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return False


def to_langchain(messages: list[Message]) -> list[BaseMessage]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out: list[BaseMessage] = []
    for m in messages:
        if m.role not in kinds:
            raise BackendError(f"unknown message role {m.role!r} (system, user or assistant)")
        out.append(kinds[m.role](content=m.content))
    return out


def _raw_text(message: Any) -> str:
    """What the model actually produced: tool-call arguments, else the content."""
    for call in getattr(message, "tool_calls", None) or []:
        return json.dumps(call["args"], ensure_ascii=False)
    for call in getattr(message, "invalid_tool_calls", None) or []:
        if call.get("args"):
            return str(call["args"])
    content = message.content
    refusal = (getattr(message, "additional_kwargs", None) or {}).get("refusal")
    if not content and refusal:  # OpenAI structured outputs: the model declined
        return f"(model refused: {refusal})"
    if isinstance(content, list):  # content blocks
        return "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    return str(content or "")


def _answer_text(message: Any, parser: Runnable[Any, Any] | None) -> str:
    """JSON text of the parsed answer; on a parse failure the raw output, so that the
    engine re-asks with the actual error."""
    if parser is None:
        return _raw_text(message)
    from langchain_core.outputs import ChatGeneration

    try:
        # What `parser.invoke(message)` does, without the Runnable's callback set-up (~0.2 ms).
        parsed = parser.parse_result([ChatGeneration(message=message)])  # type: ignore[attr-defined]
    except Exception:  # OutputParserException and friends: let the engine explain it
        return _raw_text(message)
    if parsed is None:
        return _raw_text(message)
    if hasattr(parsed, "model_dump"):
        parsed = parsed.model_dump(mode="json")
    return json.dumps(parsed, ensure_ascii=False)


def _usage(llm_output: dict[str, Any] | None, generations: list[Any]) -> Usage:
    # llm_output holds the request's usage once; each message carries a copy of the same
    # totals when n > 1, so summing messages would count n times.
    token_usage = (llm_output or {}).get("token_usage") or {}
    if token_usage:
        return Usage(
            prompt_tokens=int(token_usage.get("prompt_tokens") or 0),
            completion_tokens=int(token_usage.get("completion_tokens") or 0),
        )
    meta = getattr(generations[0].message, "usage_metadata", None) if generations else None
    if meta:
        return Usage(prompt_tokens=meta["input_tokens"], completion_tokens=meta["output_tokens"])
    return Usage()
