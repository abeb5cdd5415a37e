"""The lean OpenAI backend sends exactly what LangChain's stock `ChatOpenAI` sends.

`OpenAIBackend` (the default path) builds the request JSON itself (`llm/openai_wire.py`), byte
for byte what stock `ChatOpenAI` sends;
`LangChainBackend` (`--backend langchain`) goes through `ChatOpenAI`. These tests send the same
requests through the lean backend, through `LangChainBackend` and through `LangChainBackend`
with stock `ChatOpenAI` in place of realign's subclass, and compare the JSON bodies on the wire
and the answers, for every output schema the stages ask for. Equal bodies are what keeps the
cassettes (matched on the body) and the two paths' shared cache keys valid.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, Field

from realign.llm import langchain_fixes
from realign.llm.base import ChatRequest, Message
from realign.llm.langchain_backend import LangChainBackend
from realign.llm.openai_backend import OpenAIBackend


class Label(BaseModel):
    reason: str
    task_type: str


class Inner(BaseModel):
    """A nested model: its schema is a reference into the definitions."""

    score: int = Field(ge=1, le=10, description="1 to 10")
    tags: list[str] = Field(default_factory=list, max_length=3)


class Nested(BaseModel):
    """An output with a docstring (the tool's description) and nested models."""

    inner: Inner = Field(description="a field description beside a reference")
    many: list[Inner]
    note: str | None = None


def _stage_schemas() -> list[type[BaseModel]]:
    from realign.augment.generate import pairs_schema
    from realign.augment.rephrase import RephraseOutput
    from realign.judge.requests import PairwiseOutput, PointwiseOutput
    from realign.stages.classify import _classification_schema
    from realign.stages.rewrite import RewriteOutput

    return [
        RewriteOutput,
        PointwiseOutput,
        PairwiseOutput,
        RephraseOutput,
        _classification_schema(("math", "code", "default")),
        pairs_schema(("math", "default")),
    ]


def _answer(method: str | None, n: int, args: str) -> dict[str, Any]:
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
    backend_class: type[Any],
    request: ChatRequest,
    method: str,
    base_url: str | None,
    args: str = '{"reason": "sums", "task_type": "math"}',
) -> tuple[bytes, list[str]]:
    bodies: list[bytes] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(req.content)
        return httpx.Response(200, json=_answer(method, request.n, args))

    backend = backend_class(
        "gpt-4o-mini",
        base_url=base_url,
        api_key="sk-test-0123456789",
        structured_method=method,
        supports_n=True,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    resp = asyncio.run(backend.chat(request))
    (body,) = bodies
    return body, resp.texts


def _three_ways(
    request: ChatRequest, method: str, base_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[str]]:
    """The lean backend's body (parsed) and texts, after checking that it sends the bytes
    stock `ChatOpenAI` sends (key order, spacing, UTF-8: what the cassettes hold), that
    realign's LangChain path sends the same JSON (its key order differs: it hands messages
    and tools over in `extra_body`), and that all three read the same texts."""
    lean_body, lean_texts = _send(OpenAIBackend, request, method, base_url)
    lc_body, lc_texts = _send(LangChainBackend, request, method, base_url)
    from langchain_openai import ChatOpenAI

    with monkeypatch.context() as m:
        m.setattr(langchain_fixes, "chat_openai_class", lambda: ChatOpenAI)
        stock_body, stock_texts = _send(LangChainBackend, request, method, base_url)
    assert lean_body == stock_body
    assert json.loads(lc_body) == json.loads(stock_body)
    assert lean_texts == stock_texts == lc_texts
    return json.loads(lean_body), lean_texts


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
    body, texts = _three_ways(request, method or "function_calling", base_url, monkeypatch)
    assert body["messages"][0] == {"role": "system", "content": messages[0].content}
    if method == "function_calling":
        assert body["tools"][0]["function"]["name"] == "Label"
        assert json.loads(texts[0]) == {"reason": "sums", "task_type": "math"}


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
@pytest.mark.parametrize("schema_index", range(7))
def test_every_stage_schema_is_sent_as_chatopenai_sends_it(
    method: str, schema_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = [Nested, *_stage_schemas()][schema_index]
    request = ChatRequest(
        stage="rewrite",
        messages=[Message(role="user", content="x")],
        json_schema=schema.model_json_schema(),
        schema_name=schema.__name__,
        max_tokens=None if schema_index % 2 else 300,
    )
    base_url = None if method == "json_schema" else "http://127.0.0.1:9/v1"
    body, _ = _three_ways(request, method, base_url, monkeypatch)
    assert "$ref" not in json.dumps(body) and "n" not in body


@pytest.mark.parametrize(
    "args",
    [
        '{"reason": "cut',  # truncated: returned raw for the engine's re-ask
        '{"reason":"a","task_type":"b"}',  # compact: re-encoded the same way
        "",  # no arguments
        '{"reason": "new\nline", "task_type": "x"}',  # a raw control character in a string
    ],
)
def test_tool_call_arguments_are_read_as_langchain_reads_them(
    args: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ChatRequest(
        stage="classify",
        messages=[Message(role="user", content="x")],
        json_schema=Label.model_json_schema(),
        schema_name="Label",
    )
    base_url = "http://127.0.0.1:9/v1"
    _, lean_texts = _send(OpenAIBackend, request, "function_calling", base_url, args)
    _, langchain_texts = _send(LangChainBackend, request, "function_calling", base_url, args)
    assert lean_texts == langchain_texts


def test_parameters_that_are_not_plain_json_take_the_clients_path() -> None:
    assert langchain_fixes.plain_json({"a": [1, 2.5, True, None, "x"]})
    assert not langchain_fixes.plain_json({"a": (1, 2)})
    assert not langchain_fixes.plain_json({1: "x"})
    assert not langchain_fixes.plain_json([{"content": b"bytes"}])
