"""Google Programmable Search (Custom Search JSON API) through `google-api-python-client`.

Keys: `GOOGLE_API_KEY` and `GOOGLE_CSE_ID` (the names LangChain's wrapper uses) or arguments.

Endpoint override (`--search-endpoint URL`): passed as `client_options={"api_endpoint": URL}`.
googleapiclient then uses URL *instead of* the discovery document's root URL + service path
(`https://customsearch.googleapis.com/` + `""`) and appends the method path `customsearch/v1`,
so a request goes to `URL/customsearch/v1?q=...&cx=...&num=...&key=...&alt=json`. A proxy or a
test server must therefore answer `GET <URL>/customsearch/v1`.

The client is synchronous (httplib2), so each query runs in a worker thread. httplib2's `Http`
object is not thread-safe, so every worker thread builds its own service object (from the
discovery document bundled with the library: no network call for discovery).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any

from pydantic import SecretStr

from realign.credentials import remember
from realign.records import Evidence
from realign.search.base import SearchError, kind_for_status, redact

DEFAULT_ENDPOINT = "https://customsearch.googleapis.com/"
MAX_NUM = 10  # the API rejects num > 10


class _RedactKeys(logging.Filter):
    """googleapiclient logs the full request URL (with `key=`) at DEBUG level: mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact(msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


_filter_installed = False


def _install_log_filter() -> None:
    global _filter_installed
    if not _filter_installed:
        for name in ("googleapiclient.discovery", "googleapiclient.http"):
            logging.getLogger(name).addFilter(_RedactKeys())
        _filter_installed = True


class GoogleSearch:
    name = "google"

    def __init__(
        self,
        api_key: str | None = None,
        cse_id: str | None = None,
        *,
        endpoint: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        # SecretStr: a traceback or log line that shows this provider never shows the key.
        self._api_key = SecretStr(api_key or os.environ.get("GOOGLE_API_KEY", ""))
        remember(self._api_key)
        self.cse_id = cse_id or os.environ.get("GOOGLE_CSE_ID", "")
        missing = [
            n
            for n, v in (("GOOGLE_API_KEY", self.api_key_value), ("GOOGLE_CSE_ID", self.cse_id))
            if not v
        ]
        if missing:
            raise SearchError(
                "auth",
                self.name,
                f"{' and '.join(missing)} not set (set the environment variable(s) or pass "
                "--google-api-key / --google-cse-id; or use --retrieval local:PATH offline)",
            )
        self.endpoint = endpoint
        self.timeout = timeout
        self._local = threading.local()
        _install_log_filter()

    @property
    def api_key_value(self) -> str:
        return self._api_key.get_secret_value()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint={self.endpoint!r})"

    @property
    def provider_id(self) -> str:
        # The engine id (cx) decides which sites are searched, so it belongs in the cache key;
        # the API key does not change answers and must not be stored.
        return f"google:{self.endpoint or DEFAULT_ENDPOINT}:cx={self.cse_id}"

    def _service(self) -> Any:
        svc = getattr(self._local, "service", None)
        if svc is None:
            import httplib2
            from googleapiclient.discovery import build

            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            svc = build(
                "customsearch",
                "v1",
                developerKey=self.api_key_value,
                static_discovery=True,
                cache_discovery=False,
                client_options=options,
                http=httplib2.Http(timeout=self.timeout),
            )
            self._local.service = svc
        return svc

    def _search_sync(self, query: str, num: int) -> dict[str, Any]:
        import httplib2
        from googleapiclient.errors import HttpError

        try:
            return self._service().cse().list(q=query, cx=self.cse_id, num=num).execute()
        except HttpError as e:
            status = int(e.resp.status) if e.resp is not None else None
            body = e.content.decode("utf-8", "replace") if isinstance(e.content, bytes) else ""
            detail = _error_message(body) or str(e.reason or "")
            raise SearchError(
                kind_for_status(status, body),
                self.name,
                redact(f"HTTP {status}: {detail}", self.api_key_value),
                status=status,
            ) from None
        except (OSError, httplib2.HttpLib2Error) as e:  # refused, DNS, timeout
            raise SearchError(
                "other", self.name, redact(f"network error: {e}", self.api_key_value)
            ) from None

    async def search(self, query: str, k: int) -> list[Evidence]:
        num = max(1, min(k, MAX_NUM))
        data = await asyncio.to_thread(self._search_sync, query, num)
        return parse_response(data)


def parse_response(data: dict[str, Any]) -> list[Evidence]:
    """Evidence from a Custom Search response (`items` is absent when nothing was found)."""
    out = []
    for item in data.get("items") or []:
        out.append(
            Evidence(
                snippet=str(item.get("snippet") or ""),
                title=str(item.get("title") or ""),
                url=str(item.get("link") or ""),
                provider="google",
            )
        )
    return out


def _error_message(body: str) -> str:
    """The `error.message` of a Google JSON error body ('' when the body is not one)."""
    try:
        err = json.loads(body).get("error", {})
    except (json.JSONDecodeError, AttributeError):
        return ""
    return str(err.get("message", "")) if isinstance(err, dict) else ""
