"""Every place realign works around LangChain (`langchain-openai`, `langchain-core`) or the
`openai` client underneath it, in one module, each with the reason.

They were checked against the versions in `CHECKED_WITH`; `tests/test_langchain_fixes.py`
fails when another version is installed, so that an upgrade makes someone re-read this file
(and rerun `tests/test_backend_payload.py`, which compares the wire JSON with stock
`ChatOpenAI`) before moving the range.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from realign.llm.base import Usage

if TYPE_CHECKING:
    import httpx
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable
    from langchain_openai import ChatOpenAI

# distribution -> (lowest checked version, first version not checked), as (major, minor).
CHECKED_WITH: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "langchain-openai": ((1, 8), (1, 9)),
    "langchain-core": ((1, 8), (1, 9)),
}


def chat_model(
    *, model: str, base_url: str, api_key: str, timeout: float, http_client: httpx.AsyncClient
) -> ChatOpenAI:
    """A `ChatOpenAI` set up the way realign needs it."""
    return chat_openai_class()(
        model=model,
        # Explicit, so ChatOpenAI never falls back to OPENAI_BASE_URL on its own.
        base_url=base_url,
        api_key=SecretStr(api_key),
        max_retries=0,  # the engine owns retries and their accounting
        timeout=timeout,
        include_response_headers=True,  # x-ratelimit-* for the engine's pacer
        # Always our own client (one per backend and event loop, see
        # OpenAIBackend._chat_model): langchain-openai otherwise shares one cached client per
        # base URL, whose pooled connections break on the second asyncio.run().
        http_async_client=http_client,
        use_responses_api=False,  # chat completions: what compatible servers speak
        stream_usage=False,
    )


def max_tokens_kwargs(max_tokens: int, openai_url: bool) -> dict[str, Any]:
    """The call kwargs that set the output limit. ChatOpenAI renames `max_tokens` to
    `max_completion_tokens`, which llama.cpp's server (and older OpenAI-compatible servers)
    silently ignore; for them it goes in the body under its old name."""
    if openai_url:
        return {"max_tokens": max_tokens}  # sent as max_completion_tokens
    return {"extra_body": {"max_tokens": max_tokens}}


def structured_parts(
    llm: BaseChatModel, schema: dict[str, Any], method: str
) -> tuple[dict[str, Any], Runnable[Any, Any]]:
    """(request kwargs, output parser) that `with_structured_output` builds for `schema`.

    `with_structured_output` returns `llm | parser`, whose `ainvoke` keeps only the first
    choice: keeping its two halves lets one call return all n choices. The LangSmith
    metadata it binds (`ls_structured_output_format`) is not a request parameter: dropped.
    Any chat model whose `with_structured_output` returns such a sequence works (most do)."""
    runnable = llm.with_structured_output(schema, method=method)  # type: ignore[arg-type]
    bound, parser = runnable.first, runnable.last  # type: ignore[attr-defined]
    kwargs = {k: v for k, v in bound.kwargs.items() if k != "ls_structured_output_format"}
    return kwargs, parser


def answer_text(message: Any, parser: Runnable[Any, Any] | None) -> str:
    """JSON text of the parsed answer; on a parse failure the raw output, so that the
    engine re-asks with the actual error."""
    if parser is None:
        return raw_text(message)
    from langchain_core.outputs import ChatGeneration

    try:
        # What `parser.invoke(message)` does, without the Runnable's callback set-up (~0.2 ms).
        parsed = parser.parse_result([ChatGeneration(message=message)])  # type: ignore[attr-defined]
    except Exception:  # OutputParserException and friends: let the engine explain it
        return raw_text(message)
    if parsed is None:
        return raw_text(message)
    if hasattr(parsed, "model_dump"):
        parsed = parsed.model_dump(mode="json")
    return json.dumps(parsed, ensure_ascii=False)


def raw_text(message: Any) -> str:
    """What the model actually produced: tool-call arguments (parsed by LangChain, or the
    raw string it could not parse), else the content, else the model's refusal."""
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


def usage_of(llm_output: dict[str, Any] | None, generations: list[Any]) -> Usage:
    """The request's token usage. `llm_output` holds it once; with n > 1 each message carries
    a copy of the same totals, so summing the messages would count it n times."""
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


def finish_reasons(
    generations: list[Any], n: int, max_tokens: int | None, usage: Usage
) -> list[Any]:
    """Each choice's finish reason (from LangChain's `generation_info`) of a call for `n`."""
    reasons = [(g.generation_info or {}).get("finish_reason") for g in generations]
    if n == 1 and max_tokens and usage.completion_tokens >= max_tokens:
        # llama-cpp-python reports a forced tool call as "tool_calls" even when max_tokens
        # cut its arguments off; one answer that used the whole budget was cut.
        reasons = ["length"] * len(reasons)
    return reasons


# Request parameters LangChain builds as plain JSON that the openai client would walk again.
_PASSED_AS_IS = ("messages", "tools", "tool_choice")


@functools.cache
def chat_openai_class() -> type[ChatOpenAI]:
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
            if as_is and all(plain_json(v) for v in as_is.values()):
                payload["extra_body"] = {**(payload.get("extra_body") or {}), **as_is}
                for k in as_is:
                    del payload[k]
                payload["messages"] = []  # required by the client; replaced by extra_body
            return payload

    return PlainJSONChatOpenAI


def plain_json(value: Any) -> bool:
    """Only dicts with string keys, lists, strings, numbers, booleans and None."""
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return False
