"""Shared test set-up: no network, no tracing, cassettes under the top-level `cassettes/`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGCHAIN_TRACING_V2"] = "false"
# Never let a developer's real keys leak into a test or a cassette.
for _k in (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "GOOGLE_API_KEY",
    "GOOGLE_CSE_ID",
    "SERPER_API_KEY",
):
    os.environ.pop(_k, None)

ROOT = Path(__file__).resolve().parents[1]
CASSETTES = ROOT / "cassettes"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(CASSETTES / request.module.__name__.split(".")[-1])


@pytest.fixture(scope="module")
def vcr_config() -> dict:
    return {
        "filter_headers": ["authorization", "api-key", "x-api-key", "openai-organization"],
        "filter_query_parameters": ["key"],
        "match_on": ["method", "scheme", "host", "port", "path", "query", "body"],
    }


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own realign store (cache, state) so tests never share answers."""
    monkeypatch.setenv("REALIGN_HOME", str(tmp_path / "realign-home"))
