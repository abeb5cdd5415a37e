"""A deterministic in-process backend for tests and for wiring checks.

`FakeBackend(responder)` calls `responder(request) -> str | list[str]` for each request.
The default responder fills the requested JSON schema with plausible values, so every stage
runs end to end without a model; its rewrite is the original under a bold `**Answer:**` label. With `honour_max_tokens=True` an answer longer than
`max_tokens` (counted as 4 characters a token) is cut there with finish reason `length`, as a
real server does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from realign.llm.base import BackendError, ChatRequest, ChatResponse, Usage

Responder = Callable[[ChatRequest], "str | list[str]"]


def _fill(schema: dict[str, Any], defs: dict[str, Any], prompt: str) -> Any:
    if "$ref" in schema:
        return _fill(defs[schema["$ref"].split("/")[-1]], defs, prompt)
    if "anyOf" in schema:
        return _fill(schema["anyOf"][0], defs, prompt)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if t == "object":
        return {k: _fill(v, defs, prompt) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [_fill(schema.get("items", {}), defs, prompt)]
    if t == "integer":
        return max(int(schema.get("minimum", 7)), min(int(schema.get("maximum", 7)), 7))
    if t == "number":
        return 0.5
    if t == "boolean":
        return True
    return "fake: " + prompt[-60:]


def default_responder(request: ChatRequest) -> str:
    if request.json_schema is None:
        return "fake answer"
    schema = request.json_schema
    prompt = request.messages[-1].content
    out = _fill(schema, schema.get("$defs", {}), prompt)
    if request.stage == "rewrite" and isinstance(out, dict) and "response" in out:
        # A rewrite keeps the original under a bold label, as a faithful model would: the
        # filter rejects filler (the prompt's tail), and a wiring check wants rewrites.
        original = prompt.split("<response>", 1)[-1].split("</response>", 1)[0].strip()
        if "<response>" in prompt and original:
            out["response"] = f"**Answer:** {original}"
    return json.dumps(out)


class FakeBackend:
    name = "fake"

    def __init__(
        self,
        responder: Responder | None = None,
        model: str = "fake-model",
        *,
        honour_max_tokens: bool = False,
    ) -> None:
        self.model = model
        self.honour_max_tokens = honour_max_tokens
        self.responder = responder or default_responder
        self.calls: list[ChatRequest] = []

    @property
    def backend_id(self) -> str:
        return f"fake:{self.model}"

    @property
    def supports_n(self) -> bool:
        return True

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request)
        out = self.responder(request)
        if isinstance(out, BackendError):
            raise out
        texts = out if isinstance(out, list) else [out] * request.n
        reasons: list[str | None] = ["stop"] * len(texts)
        limit = request.max_tokens * 4 if request.max_tokens else None
        if self.honour_max_tokens and limit is not None:
            reasons = ["length" if len(t) > limit else "stop" for t in texts]
            texts = [t[:limit] for t in texts]
        prompt_chars = sum(len(m.content) for m in request.messages)
        return ChatResponse(
            texts=texts,
            finish_reasons=reasons,
            usage=Usage(
                prompt_tokens=prompt_chars // 4, completion_tokens=sum(len(t) for t in texts) // 4
            ),
        )

    async def aclose(self) -> None:
        return None
