"""Serper (https://serper.dev): Google results through a small JSON HTTP API.

Request: `POST <endpoint>/search` with header `X-API-KEY` and JSON body `{"q": ..., "num": k}`.
Response: `organic: [{title, link, snippet, position, date?, sitelinks?}]`, and when Google
shows them an `answerBox` (`answer` / `snippet`, `title`, `link`) and a `knowledgeGraph`
(`title`, `description`, `descriptionLink`, `attributes`). The answer box and knowledge graph
come first: they are Google's own distilled answer, the most useful evidence for short facts,
and are kept by the cleaning however short they are (`Evidence.answer`).

With `style="realign"` (a pack's `search_style: realign`) the request and its reading are
ReAlign's (`google_serper.py` in its repository): `POST /search?q=…&gl=…&hl=…&num=10`, and the
evidence is the answer box, the knowledge graph as separate items ("title: type", the
description, one item per attribute), then each organic result's snippet and attributes, of
which the caller keeps the first k (ReAlign: 5 of 10). `country` / `language` are the `gl` /
`hl` parameters in either style.

Key: `SERPER_API_KEY` or an argument. Endpoint override (`--search-endpoint URL`): requests go
to `URL/search` (default `https://google.serper.dev`).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from pydantic import SecretStr

from realign.credentials import remember
from realign.records import Evidence
from realign.search.base import SearchError, kind_for_status, redact

DEFAULT_ENDPOINT = "https://google.serper.dev"
REALIGN_RESULTS = 10


class SerperSearch:
    name = "serper"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        endpoint: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests inject a mock transport
        country: str | None = None,
        language: str | None = None,
        style: str | None = None,
    ) -> None:
        self.locale = {k: v for k, v in (("gl", country), ("hl", language)) if v}
        self.style = style
        # SecretStr: a traceback or log line that shows this provider never shows the key.
        self._api_key = SecretStr(api_key or os.environ.get("SERPER_API_KEY", ""))
        remember(self._api_key)
        if not self.api_key_value:
            raise SearchError(
                "auth",
                self.name,
                "SERPER_API_KEY not set (set it or use --retrieval local:PATH offline)",
            )
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout = timeout
        self._transport = transport

    @property
    def api_key_value(self) -> str:
        return self._api_key.get_secret_value()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r})"

    @property
    def provider_id(self) -> str:
        extra = "".join(f":{k}={v}" for k, v in self.locale.items())
        return f"serper:{self.endpoint}" + extra + (f":{self.style}" if self.style else "")

    async def search(self, query: str, k: int) -> list[Evidence]:
        url = f"{self.endpoint}/search"
        headers = {"X-API-KEY": self.api_key_value, "Content-Type": "application/json"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as client:
                if self.style == "realign":  # query parameters, 10 results: as ReAlign asks
                    params: dict[str, str | int] = {"q": query, **self.locale}
                    params["num"] = REALIGN_RESULTS
                    resp = await client.post(url, params=params, headers=headers)
                else:
                    payload: dict[str, str | int] = {"q": query, "num": k, **self.locale}
                    resp = await client.post(url, json=payload, headers=headers)
        except httpx.HTTPError as e:
            raise SearchError(
                "other", self.name, redact(f"network error: {e}", self.api_key_value)
            ) from None
        if resp.status_code != 200:
            body = resp.text[:500]
            kind = kind_for_status(resp.status_code, body)
            if resp.status_code in (400, 402) and "credit" in body.lower():
                kind = "quota"  # Serper answers "Not enough credits" when the balance is used up
            raise SearchError(
                kind,
                self.name,
                redact(f"HTTP {resp.status_code}: {body.strip()}", self.api_key_value),
                status=resp.status_code,
            )
        try:
            data = resp.json()
        except ValueError:
            raise SearchError("other", self.name, "the answer is not JSON") from None
        if self.style == "realign":
            return parse_response_realign(data)[:k]
        return parse_response(data)[:k]


def parse_response(data: dict[str, Any]) -> list[Evidence]:
    """Evidence from a Serper answer: answer box, knowledge graph, then organic results.

    The answer box and knowledge graph are marked `answer=True`: their text is often just the
    answer ("2013", "Kyrsten Sinema"), which the cleaning rules would otherwise drop as too
    short. A knowledge graph without a description still says what its entity is (title and
    type, then its attributes).
    """
    out: list[Evidence] = []
    box = data.get("answerBox") or {}
    highlighted = box.get("snippetHighlighted")
    if isinstance(highlighted, list):
        highlighted = " … ".join(str(h) for h in highlighted)
    box_text = box.get("answer") or box.get("snippet") or highlighted or ""
    if box_text:
        out.append(_ev(box_text, box.get("title"), box.get("link"), answer=True))
    kg = data.get("knowledgeGraph") or {}
    attrs = kg.get("attributes") or {}
    extra = "; ".join(f"{k}: {v}" for k, v in attrs.items())
    if kg.get("description"):
        text = kg["description"] + (f" ({extra})" if extra else "")
    elif kg.get("title") and (kg.get("type") or extra):
        kind = f": {kg['type']}" if kg.get("type") else ""
        text = f"{kg['title']}{kind}" + (f" ({extra})" if extra else "")
    else:
        text = ""
    if text:
        link = kg.get("descriptionLink") or kg.get("website")
        out.append(_ev(text, kg.get("title"), link, answer=True))
    for item in data.get("organic") or []:
        out.append(_ev(item.get("snippet"), item.get("title"), item.get("link")))
    return out


def _ev(snippet: Any, title: Any, url: Any, *, answer: bool = False) -> Evidence:
    return Evidence(
        snippet=str(snippet or ""),
        title=str(title or ""),
        url=str(url or ""),
        provider="serper",
        answer=answer,
    )


def parse_response_realign(data: dict[str, Any]) -> list[Evidence]:
    """Evidence items in the order and split ReAlign's Serper wrapper makes them: the answer
    box (its answer, else its snippet on one line, else the highlighted snippet), the
    knowledge graph's "title: type", description and each "attribute: value" as items of their
    own, then for each of the first REALIGN_RESULTS organic results its snippet and its
    "attribute: value" items. Answer box and knowledge graph items are `answer=True`."""
    out: list[Evidence] = []
    box = data.get("answerBox") or {}
    text = box.get("answer") or str(box.get("snippet") or "").replace("\n", " ")
    if not text and box.get("snippetHighlighted"):
        hl = box["snippetHighlighted"]
        text = " … ".join(str(h) for h in hl) if isinstance(hl, list) else str(hl)
    if text:
        out.append(_ev(text, box.get("title"), box.get("link"), answer=True))
    kg = data.get("knowledgeGraph") or {}
    link = kg.get("descriptionLink") or kg.get("website")
    if kg.get("type"):
        out.append(_ev(f"{kg.get('title')}: {kg['type']}", kg.get("title"), link, answer=True))
    if kg.get("description"):
        out.append(_ev(kg["description"], kg.get("title"), link, answer=True))
    for attr, value in (kg.get("attributes") or {}).items():
        out.append(_ev(f"{attr}: {value}", kg.get("title"), link, answer=True))
    for item in (data.get("organic") or [])[:REALIGN_RESULTS]:
        if "snippet" in item:
            out.append(_ev(item["snippet"], item.get("title"), item.get("link")))
        for attr, value in (item.get("attributes") or {}).items():
            out.append(_ev(f"{attr}: {value}", item.get("title"), item.get("link")))
    return out
