"""Google Custom Search provider: responses replayed from hand-written cassettes, plus the
endpoint override checked against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from local_http import serving

from realign.search.base import SearchError
from realign.search.google import GoogleSearch, parse_response
from realign.search.registry import default_retrieval_spec, make_provider
from realign.stages.retrieve_clean import clean_evidence

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"

KEY = "test-google-key-do-not-store"


def _google(endpoint: str | None = None) -> GoogleSearch:
    return GoogleSearch(KEY, "test-cx", endpoint=endpoint)


@pytest.mark.vcr
def test_google_results() -> None:
    found = asyncio.run(_google().search("when did the democratic party change its name?", 5))
    assert [e.url for e in found][:2] == [
        "https://encyclopedia.example.org/wiki/History_of_the_Democratic_Party",
        "https://history-answers.example.com/democratic-party-name",
    ]
    assert all(e.provider == "google" for e in found) and len(found) == 5
    kept, report = clean_evidence(found)
    # navigation menu and the lower-cased duplicate are dropped; date and Missing: tail stripped
    assert report.dropped == {"navigation": 1, "duplicate": 1}
    assert kept[1].snippet.startswith("The name Democratic Party came into common use")
    assert "Missing" not in kept[1].snippet
    assert kept[2].title == "Parties & elections"


@pytest.mark.vcr
def test_google_no_items() -> None:
    assert asyncio.run(_google().search("zzqx nonexistent term", 5)) == []


@pytest.mark.vcr
def test_google_quota_exceeded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # googleapiclient logs the request URL at DEBUG
    with pytest.raises(SearchError) as err:
        asyncio.run(_google().search("who wrote hamlet?", 5))
    assert err.value.kind == "quota" and err.value.status == 429
    assert "Quota exceeded" in str(err.value)
    assert KEY not in str(err.value)
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("vcr")]
    assert any("URL being requested" in m for m in ours)  # the log line that had the key
    assert not any(KEY in m for m in ours)


@pytest.mark.vcr
def test_google_key_invalid() -> None:
    with pytest.raises(SearchError) as err:
        asyncio.run(_google().search("who wrote hamlet?", 5))
    assert err.value.kind == "auth" and err.value.status == 400
    assert KEY not in str(err.value)


@pytest.mark.vcr
def test_google_api_disabled() -> None:
    with pytest.raises(SearchError) as err:
        asyncio.run(_google().search("who wrote hamlet?", 5))
    assert err.value.kind == "auth" and err.value.status == 403


def test_missing_keys_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SearchError) as err:
        make_provider("google")
    assert "GOOGLE_API_KEY and GOOGLE_CSE_ID not set" in str(err.value)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)
    monkeypatch.setenv("GOOGLE_CSE_ID", "cx-from-env")
    g = make_provider("google")
    assert isinstance(g, GoogleSearch) and g.cse_id == "cx-from-env"
    assert KEY not in g.provider_id  # the provider id goes into cache keys


def test_default_retrieval_spec() -> None:
    assert default_retrieval_spec({"GOOGLE_API_KEY": "k", "GOOGLE_CSE_ID": "c"})[0] == "google"
    spec, msg = default_retrieval_spec({"GOOGLE_API_KEY": "k"})
    assert spec == "none" and "GOOGLE_CSE_ID not set" in msg


def test_parse_response_tolerates_missing_fields() -> None:
    found = parse_response({"items": [{"link": "https://a.example"}, {"snippet": "s"}]})
    assert [(e.url, e.snippet) for e in found] == [("https://a.example", ""), ("", "s")]


def test_cassettes_hold_no_keys() -> None:
    """Hand-written or not, no cassette may carry a key or an auth header."""
    paths = sorted(CASSETTES.glob("test_search*/*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# WRITTEN BY HAND"), path
        for interaction in yaml.safe_load(text)["interactions"]:
            request = interaction["request"]
            assert "key=" not in request["uri"].lower(), path
            headers = {h.lower() for h in request.get("headers") or {}}
            assert not headers & {"x-api-key", "authorization", "api-key"}, path
        assert "test-google-key" not in text and "test-serper-key" not in text, path


# ---------------------------------------------------------------- endpoint override


class _CustomSearchHandler(BaseHTTPRequestHandler):
    """Answers every GET in the Custom Search format and remembers the request paths."""

    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        body = json.dumps(
            {
                "kind": "customsearch#search",
                "items": [
                    {
                        "title": "Local answer",
                        "link": "https://local.example/answer",
                        "snippet": "A local server answered this query in the Custom Search format.",
                    }
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def custom_search_server() -> Iterator[str]:
    _CustomSearchHandler.paths = []
    with serving(_CustomSearchHandler) as url:
        yield url


@pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1"])
def test_endpoint_override_goes_to_url_customsearch_v1(custom_search_server: str) -> None:
    found = asyncio.run(_google(custom_search_server).search("who wrote hamlet?", 3))
    assert found[0].url == "https://local.example/answer"
    path = _CustomSearchHandler.paths[0]
    assert path.startswith("/customsearch/v1?")
    assert "q=who+wrote+hamlet%3F" in path and "cx=test-cx" in path and "num=3" in path
