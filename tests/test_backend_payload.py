"""The OpenAI backend's fast path sends exactly what stock `ChatOpenAI` sends.

`OpenAIBackend` hands the messages and tools LangChain built to the openai client through
`extra_body` (so the client does not walk them again, see `langchain_fixes.chat_openai_class`). These tests
send the same requests through the backend twice, once with stock `ChatOpenAI` in its place,
and compare the JSON bodies on the wire and the answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from realign.llm import langchain_fixes
from realign.llm.base import ChatRequest, Message
from realign.llm.openai_backend import OpenAIBackend


class Label(BaseModel):
    reason: str
    task_type: str


def _answer(method: str | None, n: int) -> dict[str, Any]:
    args = json.dumps({"reason": "sums", "task_type": "math"})
    choices = []
    for i in range(n):
        if method == "function_calling":
            fn = {"name": "Label", "arguments": args}
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"c{i}", "type": "function", "function": fn}],
            }
        else:
            msg = {"role": "assistant", "content": args if method else "plain"}
        choices.append({"index": i, "message": msg, "finish_reason": "stop"})
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": choices,
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def _send(
    request: ChatRequest, method: str | None, base_url: str | None
) -> tuple[dict[str, Any], list[str]]:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, json=_answer(method, request.n))

    backend = OpenAIBackend(
        "gpt-4o-mini",
        base_url=base_url,
        api_key="sk-test-0123456789",
        structured_method=method,  # type: ignore[arg-type]
        supports_n=True,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    resp = asyncio.run(backend.chat(request))
    (body,) = bodies
    return body, resp.texts


CASES = [
    ("function_calling", "http://127.0.0.1:9/v1"),
    ("json_schema", None),
    ("json_mode", "http://127.0.0.1:9/v1"),
    (None, "http://127.0.0.1:9/v1"),
]


@pytest.mark.parametrize(("method", "base_url"), CASES)
def test_body_and_answer_match_stock_chatopenai(
    method: str | None, base_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [
        Message(role="system", content="Sort it. «ünïcode» \n"),
        Message(role="user", content="What is 2+2?"),
        Message(role="assistant", content='{"reason": "cut'),  # a re-ask carries the bad answer
        Message(role="user", content="That answer was not valid."),
    ]
    request = ChatRequest(
        stage="classify",
        messages=messages,
        json_schema=Label.model_json_schema() if method else None,
        schema_name="Label" if method else None,
        n=2,
        temperature=0.7,
        max_tokens=64,
    )
    fast_body, fast_texts = _send(request, method or "function_calling", base_url)

    from langchain_openai import ChatOpenAI

    monkeypatch.setattr(langchain_fixes, "chat_openai_class", lambda: ChatOpenAI)
    stock_body, stock_texts = _send(request, method or "function_calling", base_url)

    assert fast_body == stock_body
    assert fast_texts == stock_texts
    assert fast_body["messages"][0] == {"role": "system", "content": messages[0].content}
    if method == "function_calling":
        assert fast_body["tools"][0]["function"]["name"] == "Label"
        assert json.loads(fast_texts[0]) == {"reason": "sums", "task_type": "math"}


def test_parameters_that_are_not_plain_json_take_the_clients_path() -> None:
    assert langchain_fixes.plain_json({"a": [1, 2.5, True, None, "x"]})
    assert not langchain_fixes.plain_json({"a": (1, 2)})
    assert not langchain_fixes.plain_json({1: "x"})
    assert not langchain_fixes.plain_json([{"content": b"bytes"}])
