"""Structured output: `request.n` answers validated by a pydantic schema, each invalid one
re-asked with its validation error a bounded number of times (`Engine.reask`).

Apart from the engine's chat/cache/limits part because it only composes them: it asks through
`Engine.chat`, and decides what the cache keeps (`Engine.store` / `Engine.forget`).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from realign.llm.base import ChatRequest, ChatResponse, Message, for_record

if TYPE_CHECKING:
    from realign.llm.engine import Engine

T = TypeVar("T", bound=BaseModel)


class StructuredOutputError(RuntimeError):
    """The model's output never validated against the schema; carries the last raw output."""

    def __init__(self, message: str, raw_output: str) -> None:
        super().__init__(message)
        self.raw_output = raw_output


class OutputTruncated(StructuredOutputError):
    """An output did not validate because `max_tokens` cut it off (finish reason `length`)."""

    def __init__(self, message: str, raw_output: str, max_tokens: int | None) -> None:
        super().__init__(message, raw_output)
        self.max_tokens = max_tokens


async def structured_output(
    engine: Engine,
    request: ChatRequest,
    schema: type[T],
    *,
    raise_truncated: bool = False,
    finish_reasons: list[str | None] | None = None,
) -> list[T]:
    """`request.n` validated outputs; invalid ones are re-asked with the validation error.

    The answers of one call (the request and its re-asks) are cached together, and only
    when the call succeeds: a cached answer that failed validation would make every rerun
    replay the failure without asking again. On success the whole chain is stored, invalid
    choices of an n>1 answer included, so a rerun replays the same outputs for free. On
    failure the chain's answers that came from the cache (a Batch API answer, or stored
    before this rule) are dropped, so the rerun sends the request again.

    `raise_truncated`: when an invalid output was cut off by `max_tokens`, raise
    `OutputTruncated` at once instead of re-asking with the same budget, which would only
    be cut off again (the caller may retry with a larger one).

    `finish_reasons`, when given, receives the model's finish reason of each returned output,
    in order (None where the backend gives none): the filter keeps the original of a rewrite
    that stopped at its limit even though what it wrote parsed.
    """
    request = request.model_copy(
        update={"json_schema": _json_schema(schema), "schema_name": schema.__name__}
    )
    out: list[T] = []
    last_raw = ""
    last_err = ""
    req = request
    chain: list[tuple[ChatRequest, ChatResponse]] = []
    for attempt in range(engine.reask + 1):
        need = request.n - len(out)
        if attempt:
            # Each re-ask extends the previous one: re-sending the same re-ask would be
            # answered from the cache with the same invalid output.
            req = _reask(req, last_raw, last_err, need)
        resp = await engine.chat(req, store=False)
        chain.append((req, resp))
        truncated = False
        for i, text in enumerate(resp.texts[:need]):
            try:
                out.append(schema.model_validate(json.loads(text)))
                if finish_reasons is not None:
                    finish_reasons.append(resp.finish_reason(i))
            except (ValidationError, json.JSONDecodeError) as e:
                last_raw, last_err = text, _short_error(e)
                truncated |= resp.finish_reason(i) == "length"
        if len(out) >= request.n:
            for sent, answer in chain:
                engine.store(sent, answer)
            return out
        if truncated and raise_truncated:
            raise OutputTruncated(
                f"{request.stage}{for_record(request)}: output cut off at max_tokens="
                f"{req.max_tokens} before it was complete",
                raw_output=last_raw,
                max_tokens=req.max_tokens,
            )
        engine.stats.reasks += 1
    for sent, answer in chain:
        if answer.cached:
            engine.forget(sent)
    raise StructuredOutputError(
        f"{request.stage}{for_record(request)}: output did not match {schema.__name__} "
        f"after {engine.reask + 1} attempts: {last_err}",
        raw_output=last_raw,
    )


@functools.cache
def _json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    # Generating a schema costs ~0.5 ms; at hundreds of requests/s that is a core's worth.
    # Shared, so never mutated by anyone downstream.
    return schema.model_json_schema()


def _short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        )
    return f"not valid JSON: {e}"


def _reask(request: ChatRequest, raw: str, error: str, n: int) -> ChatRequest:
    """The same request plus the bad answer and what was wrong with it."""
    msgs = [
        *request.messages,
        Message(role="assistant", content=raw[:4000]),
        Message(
            role="user",
            content=f"That answer was not valid: {error}. Reply again with only a JSON object "
            "that matches the schema.",
        ),
    ]
    return request.model_copy(update={"messages": msgs, "n": n})
