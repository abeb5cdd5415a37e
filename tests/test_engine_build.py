"""The one engine builder (`realign.llm.build`): one set of defaults for every command, the
same defaults in `--help`, and an engine without an LLM for search-only runs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realign.cli.main import app
from realign.llm import build
from realign.llm.base import BackendError, ChatRequest, Message
from realign.llm.build import EngineOptions, build_engine
from realign.llm.fake import FakeBackend


class Local(FakeBackend):
    name = "local"


@pytest.mark.parametrize(
    ("backend", "llm", "expected"),
    [
        (FakeBackend(), True, build.HOSTED_CONCURRENCY),
        (Local(), True, build.LOCAL_CONCURRENCY),
        (None, False, build.SEARCH_CONCURRENCY),
    ],
)
def test_default_concurrency_is_one_set(
    monkeypatch: pytest.MonkeyPatch, backend: FakeBackend | None, llm: bool, expected: int
) -> None:
    monkeypatch.setattr(build, "make_backend", lambda opts, stderr=None: backend)
    built = build_engine(EngineOptions(no_cache=True), llm=llm)
    assert built.engine.limit.maximum == expected
    given = build_engine(EngineOptions(no_cache=True, concurrency=3), llm=llm)
    assert given.engine.limit.maximum == 3
    asyncio.run(built.aclose())
    asyncio.run(given.aclose())


@pytest.mark.parametrize("command", ["run", "classify", "judge", "rephrase", "generate", "filter"])
def test_help_states_the_builders_defaults(command: str) -> None:
    """`run --help` said "32 hosted, 1 local" while run used 2 locally and judge 16/1."""
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0
    text = re.sub(r"[\s│]+", " ", res.output)
    wanted = f"default: {build.HOSTED_CONCURRENCY} hosted, {build.LOCAL_CONCURRENCY} local"
    assert wanted in text


def test_an_engine_without_a_backend_makes_search_calls_only(tmp_path: Path) -> None:
    built = build_engine(EngineOptions(no_cache=True), llm=False)
    engine = built.engine
    assert not engine.has_backend

    async def fetch() -> str:
        return "evidence"

    assert asyncio.run(engine.call("search", "q", fetch)) == "evidence"
    request = ChatRequest(messages=[Message(role="user", content="hi")], stage="rewrite")
    with pytest.raises(BackendError, match="no LLM backend"):
        asyncio.run(engine.chat(request))
    asyncio.run(built.aclose())  # closing an engine without a backend is fine
