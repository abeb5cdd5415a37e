"""The small interface every search provider implements, and its error type.

A provider turns a query into raw `Evidence` (snippet, title, url, provider name). It does no
cleaning and no caching: `realign.stages.retrieve.Retriever` cleans the snippets and caches each
(provider, query, k) answer through the engine, so providers stay thin adapters.
"""

from __future__ import annotations

import re
from typing import Literal, Protocol, runtime_checkable

from realign.records import Evidence

ErrorKind = Literal["quota", "auth", "other"]


class SearchError(RuntimeError):
    """A failed search. `kind` tells the retriever whether to stop using the provider.

    `quota` and `auth` disable the provider for the rest of the run (retrying cannot help);
    `other` fails only the one query. Messages never contain API keys (see `redact`).
    """

    def __init__(
        self, kind: ErrorKind, provider: str, message: str, *, status: int | None = None
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.kind: ErrorKind = kind
        self.provider = provider
        self.message = message
        self.status = status


@runtime_checkable
class SearchProvider(Protocol):
    name: str  # registry name: "google", "serper", "local", "none"

    @property
    def provider_id(self) -> str:
        """Identifies where answers come from (name + endpoint/corpus): part of the cache key."""
        ...

    async def search(self, query: str, k: int) -> list[Evidence]:
        """Up to `k` raw results for `query`. Raise SearchError on failure."""
        ...


# Google's error reasons for spent quota; "usageLimits" alone (API not enabled) is not one.
_QUOTA_WORDS = re.compile(
    r"quota|rateLimitExceeded|dailyLimitExceeded|limit exceeded|credits", re.IGNORECASE
)


def kind_for_status(status: int | None, body: str = "") -> ErrorKind:
    """Map an HTTP status (and the error body's wording) to an error kind.

    Google answers 429 for "Quota exceeded" and 403 both for "daily limit exceeded" and for
    "API key not valid / API not enabled"; the body tells those two apart.
    """
    if status == 429:
        return "quota"
    if status in (401, 403):
        return "quota" if _QUOTA_WORDS.search(body) else "auth"
    if status == 400 and "api key not valid" in body.lower():
        return "auth"  # Google answers 400 "API key not valid. Please pass a valid API key."
    return "other"


_SECRET_PARAM = re.compile(r"([?&](?:key|api_key|apikey)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every given secret and every `key=` URL parameter value masked."""
    out = _SECRET_PARAM.sub(r"\1***", text)
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    return out
