"""Serper provider: responses replayed from hand-written cassettes."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from realign.search.base import SearchError
from realign.search.registry import make_provider
from realign.search.serper import SerperSearch, parse_response
from realign.stages.retrieve_clean import clean_evidence

KEY = "test-serper-key-do-not-store"


@pytest.mark.vcr
def test_serper_results() -> None:
    found = asyncio.run(SerperSearch(KEY).search("who wrote hamlet?", 5))
    # answer box first, then the knowledge graph with its attributes, then organic results
    assert found[0].snippet == "William Shakespeare"
    assert found[1].title == "Hamlet" and "Author: William Shakespeare" in found[1].snippet
    assert found[2].url == "https://encyclopedia.example.org/wiki/Hamlet"
    assert len(found) == 5 and all(e.provider == "serper" for e in found)
    assert [e.answer for e in found] == [True, True, False, False, False]
    kept, report = clean_evidence(found)
    # the answer box "William Shakespeare" is kept though under 3 words; the notice is dropped
    assert report.dropped == {"notice": 1}
    assert [e.snippet for e in kept][:1] == ["William Shakespeare"] and len(kept) == 4


def test_serper_short_answers_and_bare_knowledge_graph_are_answers() -> None:
    # Shapes of Serper's documented answerBox variants and a knowledge graph without description.
    found = parse_response(
        {
            "answerBox": {"title": "Arizona / Senators", "snippetHighlighted": ["Kyrsten Sinema"]},
            "knowledgeGraph": {
                "title": "Democratic Party",
                "type": "Political party",
                "attributes": {"Founded": "January 8, 1828"},
            },
            "organic": [{"title": "t", "link": "l", "snippet": "2013"}],
        }
    )
    assert [(e.snippet, e.answer) for e in found] == [
        ("Kyrsten Sinema", True),
        ("Democratic Party: Political party (Founded: January 8, 1828)", True),
        ("2013", False),
    ]
    kept, report = clean_evidence(found)
    assert [e.snippet for e in kept] == [e.snippet for e in found[:2]]
    assert report.dropped == {"empty": 1}
    year = parse_response({"answerBox": {"answer": "the 1830s", "snippet": "In the 1830s ..."}})
    assert [(e.snippet, e.answer) for e in year] == [("the 1830s", True)]
    assert clean_evidence(year)[0] == year


@pytest.mark.vcr
def test_serper_unauthorized() -> None:
    with pytest.raises(SearchError) as err:
        asyncio.run(SerperSearch(KEY).search("who wrote hamlet?", 5))
    assert err.value.kind == "auth" and err.value.status == 403
    assert KEY not in str(err.value)


@pytest.mark.vcr
def test_serper_out_of_credits() -> None:
    with pytest.raises(SearchError) as err:
        asyncio.run(SerperSearch(KEY).search("who wrote hamlet?", 5))
    assert err.value.kind == "quota"
    assert "Not enough credits" in str(err.value)


def test_serper_endpoint_override_and_headers() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"organic": [{"title": "t", "link": "l", "snippet": "s"}]})

    s = SerperSearch(
        KEY, endpoint="http://proxy.internal/serper/", transport=httpx.MockTransport(answer)
    )
    found = asyncio.run(s.search("q", 3))
    assert [e.snippet for e in found] == ["s"]
    assert str(seen[0].url) == "http://proxy.internal/serper/search"
    assert seen[0].headers["x-api-key"] == KEY
    assert seen[0].content == b'{"q":"q","num":3}'


def test_serper_network_error_hides_key() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {KEY}")

    s = SerperSearch(KEY, transport=httpx.MockTransport(boom))
    with pytest.raises(SearchError) as err:
        asyncio.run(s.search("q", 3))
    assert err.value.kind == "other" and KEY not in str(err.value)


def test_serper_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SearchError, match="SERPER_API_KEY not set"):
        make_provider("serper")
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    assert isinstance(make_provider("serper"), SerperSearch)
