"""The OpenAI chat-completions wire format without a client library: the request body realign
sends and the parts of an answer it reads. Pure functions; `openai_backend` does the I/O.

The body is the one LangChain's `ChatOpenAI` sends for the same request (same keys and
values; `tests/test_backend_payload.py` compares the two on the wire), so answers cached or
recorded through either path stay valid for the other. Structured output, by method:
- `json_schema`: `response_format: {type: json_schema, json_schema: {name, schema, strict}}`;
- `function_calling`: one tool built from the schema, forced by `tool_choice`, no parallel calls;
- `json_mode`: `response_format: {type: json_object}` (valid JSON, schema not enforced).
"""

from __future__ import annotations

import json
import re
from typing import Any

from realign.llm.base import ChatRequest, Usage
from realign.llm.openai_schemas import strict_schema, tool_schema

try:  # a C JSON codec: ~5x faster than the standard library on these bodies
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the fallback is for safety
    orjson = None  # type: ignore[assignment]


def dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8 (the way httpx encodes a request's `json=`)."""
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    return orjson.loads(data) if orjson is not None else json.loads(data)


_FENCED = re.compile(r"```(?:json)?(.*)```", re.DOTALL)
_STRIP = " \n\r\t`"


def structured_params(json_schema: dict[str, Any], name: str, method: str) -> dict[str, Any]:
    """The body parameters that ask for output in `json_schema` with `method` (built once per
    schema by the backend)."""
    schema = tool_schema(json_schema, name)
    if method == "json_schema":
        fmt = {"name": schema["title"], "schema": strict_schema(schema), "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": fmt}}
    if method == "json_mode":
        return {"response_format": {"type": "json_object"}}
    title = schema.pop("title")  # the tool's name; the rest of the schema is its parameters
    function: dict[str, Any] = {"name": title}
    if "description" in schema:
        function["description"] = schema.pop("description")
    function["parameters"] = schema
    return {
        "tools": [{"type": "function", "function": function}],
        "tool_choice": {"type": "function", "function": {"name": title}},
        "parallel_tool_calls": False,
    }


def request_body(
    model: str,
    request: ChatRequest,
    n: int,
    *,
    openai_url: bool,
    structured: dict[str, Any] | None,
) -> dict[str, Any]:
    """The JSON body of one chat-completions request for `n` choices, its keys in the order
    `ChatOpenAI` sends them (model, stream, messages, the other parameters sorted, then what it
    passes in `extra_body`), so that the bytes on the wire are the same too."""
    params: dict[str, Any] = {"temperature": request.temperature}
    if n > 1:
        params["n"] = n
    if structured:
        params.update(structured)
    if request.max_tokens is not None and openai_url:
        params["max_completion_tokens"] = request.max_tokens
    body: dict[str, Any] = {
        "model": model,
        "stream": False,
        "messages": [{"content": m.content, "role": m.role} for m in request.messages],
    }
    for key in sorted(params):
        body[key] = params[key]
    if request.max_tokens is not None and not openai_url:
        # OpenAI renamed it max_completion_tokens; llama.cpp's server (and older compatible
        # servers) silently ignore the new name, so they get the old one.
        body["max_tokens"] = request.max_tokens
    return body


def answer_texts(data: dict[str, Any], method: str | None) -> list[str]:
    """Each choice's text: for a structured request the JSON of its output (tool-call
    arguments, or content), re-encoded when it parses and raw when it does not, so that the
    engine re-asks with the actual error; a refusal as "(model refused: …)"."""
    return [_choice_text(c.get("message") or {}, method) for c in data.get("choices") or []]


def _choice_text(message: dict[str, Any], method: str | None) -> str:
    for call in message.get("tool_calls") or []:
        raw = (call.get("function") or {}).get("arguments") or ""
        return raw if method is None else _json_or_raw(raw, fenced=False)
    content = message.get("content")
    if isinstance(content, list):  # content blocks
        content = "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    if not content:
        refusal = message.get("refusal")
        return f"(model refused: {refusal})" if refusal else ""
    if method is None or method == "function_calling":  # no tool call: what it said instead
        return str(content)
    return _json_or_raw(str(content), fenced=True)


def _json_or_raw(text: str, *, fenced: bool) -> str:
    """`text` re-encoded as JSON when it holds a JSON object or array; else `text` itself.
    `fenced`: model content may wrap the JSON in a Markdown code fence."""
    candidates = [text.strip(_STRIP) if fenced else text]
    if fenced and (m := _FENCED.search(text)):
        candidates.append(m.group(1).strip(_STRIP))
    for candidate in candidates:
        try:
            parsed = json.loads(candidate, strict=False) if candidate else {}
        except ValueError:
            continue
        if isinstance(parsed, dict | list):
            return json.dumps(parsed, ensure_ascii=False)
    return text


def finish_reasons(data: dict[str, Any], n: int, max_tokens: int | None, usage: Usage) -> list[Any]:
    """Each choice's finish reason; with one choice that used the whole `max_tokens`, "length"
    (llama-cpp-python reports a forced tool call as "tool_calls" even when max_tokens cut its
    arguments off)."""
    reasons = [c.get("finish_reason") for c in data.get("choices") or []]
    if n == 1 and max_tokens and usage.completion_tokens >= max_tokens:
        reasons = ["length"] * len(reasons)
    return reasons


def usage_of(data: dict[str, Any]) -> Usage:
    """The request's token usage (once per request, whatever n)."""
    u = data.get("usage") or {}
    return Usage(
        prompt_tokens=int(u.get("prompt_tokens") or 0),
        completion_tokens=int(u.get("completion_tokens") or 0),
    )
