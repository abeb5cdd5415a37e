"""Serper provider: responses replayed from hand-written cassettes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from realign.cli.main import app
from realign.search.base import SearchError
from realign.search.registry import make_provider
from realign.search.serper import SerperSearch, parse_response, parse_response_realign
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


@pytest.mark.vcr
def test_serper_realign_style_request() -> None:
    """ReAlign's way (`search_style: realign`): gl/hl/num=10 query parameters, and the
    knowledge graph's type, description and each attribute as evidence items of their own."""
    s = SerperSearch(KEY, country="us", language="en", style="realign")
    found = asyncio.run(s.search("who built the lighthouse of alexandria?", 5))
    assert [e.snippet for e in found] == [
        "Sostratus of Cnidus is credited with the design.",  # answer box, on one line
        "Lighthouse of Alexandria: Ancient lighthouse",
        "A tall tower on the island of Pharos that guided ships into the harbour of Alexandria.",
        "Location: Pharos, Alexandria",
        "Completed: about 280 BC",
    ]  # the first 5 of 9 items; the organic snippets and their attributes come after
    assert [e.answer for e in found] == [True] * 5
    cassette = Path(__file__).parents[1] / "cassettes/test_search_serper"
    recorded = yaml.safe_load((cassette / "test_serper_realign_style_request.yaml").read_text())
    every = parse_response_realign(
        json.loads(recorded["interactions"][0]["response"]["body"]["string"])
    )
    assert [e.snippet for e in every][5:7] == [
        "The lighthouse was commissioned under the early Ptolemies and finished decades later.",
        "Height: over 100 m",
    ]
    assert len(every) == 9 and "gl=us" in s.provider_id


def test_serper_locale_goes_into_the_json_body_of_the_default_style() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"organic": []})

    s = SerperSearch(KEY, country="de", language="de", transport=httpx.MockTransport(answer))
    asyncio.run(s.search("q", 3))
    assert seen[0].content == b'{"q":"q","num":3,"gl":"de","hl":"de"}'


def test_serper_is_chosen_when_only_its_key_is_set() -> None:
    from realign.search.registry import default_retrieval_spec

    spec, msg = default_retrieval_spec({"SERPER_API_KEY": "k"})
    assert spec == "serper" and "SERPER_API_KEY is set" in msg
    both = {"SERPER_API_KEY": "k", "GOOGLE_API_KEY": "g", "GOOGLE_CSE_ID": "c"}
    assert default_retrieval_spec(both)[0] == "google"
    spec, msg = default_retrieval_spec({})
    assert spec == "none" and "SERPER_API_KEY" in msg


@pytest.mark.vcr
def test_serper_chosen_from_the_key_in_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`realign run` with only SERPER_API_KEY set searches Serper, with the pack's gl/hl and
    ReAlign's request, and the rewrite prompt carries the evidence."""
    from realign.llm.fake import FakeBackend
    from realign.llm.registry import register_backend

    for name in ("GOOGLE_API_KEY", "GOOGLE_CSE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    backend = FakeBackend()
    register_backend("test-serper-run", lambda s: backend, replace=True)
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "pack.yaml").write_text(
        "search_style: realign\nsearch_country: gb\nsearch_language: en\nretrieve_k: 5\n"
    )
    question = "Who built the lighthouse of Alexandria?"
    data = [
        {
            "items": [
                {"from": "human", "value": question, "category": "open_qa"},
                {"from": "gpt", "value": "Sostratus, it is said."},
            ]
        }
    ]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    argv = ["run", str(src), "-o", str(tmp_path / "out.json"), "--backend", "test-serper-run"]
    res = CliRunner().invoke(app, [*argv, "--criteria", str(pack), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "retrieval: serper (SERPER_API_KEY is set" in res.output
    (rewrite,) = [c for c in backend.calls if c.stage == "rewrite"]
    assert "Lighthouse of Alexandria: Ancient lighthouse" in rewrite.messages[-1].content
    out = json.loads((tmp_path / "out.json").read_text())
    assert out[0]["realign"]["units"][0]["evidence"][0]["provider"] == "serper"
