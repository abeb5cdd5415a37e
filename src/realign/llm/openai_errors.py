"""Failed requests (HTTP error answers, transport errors, openai client exceptions) as
`BackendError`s the engine can act on, never showing the key."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from typing import Any

from realign.credentials import redact
from realign.llm.base import BackendError
from realign.llm.ratelimit import retry_after_seconds

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Headers worth keeping with a response (the engine caches responses: keep them small).
KEPT_HEADERS = re.compile(r"^(x-ratelimit-.*|retry-after(-ms)?|x-request-id|openai-processing-ms)$")


def scrub(text: str, api_key: str | None = None) -> str:
    """`text` with the API key (and anything that looks like one) masked."""
    return redact(text, [api_key] if api_key and len(api_key) >= 4 else [])


def kept_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {k.lower(): str(v) for k, v in dict(headers).items() if KEPT_HEADERS.match(k.lower())}


def map_openai_error(
    e: BaseException,
    *,
    base_url: str | None,
    model: str,
    api_key: str | None = None,
    timeout: float | None = None,
    key_source: str = "",
) -> BackendError:
    """An exception raised by the openai client (directly or through LangChain) as a
    BackendError the engine can act on. Messages never carry the API key. `api_key`: the key
    sent (None: none was); `key_source` says where it came from, for a 401."""
    import openai  # only the LangChain backend raises these; the lean path never imports it

    if isinstance(e, openai.APIConnectionError):  # APITimeoutError included
        return map_transport_error(
            e,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            timed_out=isinstance(e, openai.APITimeoutError),
        )
    if not isinstance(e, openai.APIStatusError):
        where = base_url or OPENAI_BASE_URL
        msg = f"unexpected error from {where}: {type(e).__name__}: {e}"
        return BackendError(scrub(msg, api_key), retryable=False)
    return map_status_error(
        e.status_code,
        e.response.headers,
        _server_message(e),
        getattr(e, "code", None),
        base_url=base_url,
        model=model,
        api_key=api_key,
        key_source=key_source,
    )


def map_transport_error(
    e: BaseException,
    *,
    base_url: str | None,
    api_key: str | None = None,
    timeout: float | None = None,
    timed_out: bool | None = None,
) -> BackendError:
    """A request that got no HTTP answer (refused, unresolvable, reset, timed out), from any
    client (aiohttp, httpx, openai). `timed_out`: None: judged from the exception's type."""
    where = base_url or OPENAI_BASE_URL
    # aiohttp and openai's aiohttp transport report a refused connection as a *timeout*
    # (ConnectTimeout caused by ConnectionRefusedError): the cause says what happened.
    causes = [e, *_causes(e)]
    if timed_out is None:
        timed_out = isinstance(e, TimeoutError) or _is_httpx_timeout(e)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        msg = f"the server at {where} refused the connection: is it running, and is the URL's port right?"
        return BackendError(scrub(msg, api_key), retryable=True)
    if any(isinstance(c, socket.gaierror) for c in causes):
        msg = f"cannot connect to {where}: its host name does not resolve"
        return BackendError(scrub(msg, api_key), retryable=True)
    refused = next((c for c in causes if _is_connect_failure(c)), None)
    if timed_out and refused is None:
        return BackendError(
            scrub(f"request to {where} timed out after {timeout or '?'}s", api_key),
            retryable=True,
        )
    cause = refused or e.__cause__ or e.__context__ or e
    detail = f" ({type(cause).__name__}: {cause})" if cause else ""
    return BackendError(scrub(f"cannot connect to {where}{detail}", api_key), retryable=True)


def map_status_error(
    status: int,
    response_headers: Mapping[str, str],
    server_says: str,
    code: str | None = None,
    *,
    base_url: str | None,
    model: str,
    api_key: str | None = None,
    key_source: str = "",
) -> BackendError:
    """An HTTP error answer (status >= 400) as a BackendError; `server_says`: the server's own
    message (`server_message`), `code`: its error code when it gives one."""
    where = base_url or OPENAI_BASE_URL

    def err(msg: str, **kw: Any) -> BackendError:
        return BackendError(scrub(msg, api_key), **kw)

    headers = kept_headers(dict(response_headers))
    common: dict[str, Any] = {"status": status, "headers": headers}
    if status == 429:
        if "insufficient_quota" in server_says or code == "insufficient_quota":
            return err(
                f"429 from {where}: the account has no quota left (billing), retrying cannot "
                f"help: {server_says}",
                retryable=False,
                **common,
            )
        return err(
            f"429 rate limited by {where}: {server_says}",
            retryable=True,
            retry_after=retry_after_seconds(response_headers),
            **common,
        )
    if status == 500 and "validation error" in server_says:
        # llama.cpp's server answers a request it cannot parse with 500, not 422.
        return err(f"{status} from {where}: request rejected: {server_says}", **common)
    if status >= 500 or status in (408, 409):
        return err(
            f"{status} server error from {where} (transient, will retry): {server_says}",
            retryable=True,
            retry_after=retry_after_seconds(response_headers),
            **common,
        )
    if status == 401:
        if api_key:  # a key was sent: it is the key that is wrong, not its absence
            source = f" ({key_source})" if key_source else ""
            hint = (
                f"the server rejected the API key{source}: check that OPENAI_API_KEY or "
                "api_key in $REALIGN_HOME/config.toml holds a valid key for this server"
            )
        else:
            hint = (
                f"the server at {where} wants an API key and none was sent: set "
                "OPENAI_API_KEY or api_key in $REALIGN_HOME/config.toml"
            )
        return err(f"401 unauthorized at {where}: {hint}. Server said: {server_says}", **common)
    if status == 403:
        return err(
            f"403 forbidden at {where}: the key has no access to model '{model}' or this "
            f"endpoint. Server said: {server_says}",
            **common,
        )
    if status == 404:
        return err(
            f"404 at {where}: model '{model}' not found, or the base URL is wrong (it usually "
            f"ends in /v1). Server said: {server_says}",
            **common,
        )
    return err(f"{status} from {where} (request rejected): {server_says}", **common)


def _is_httpx_timeout(e: BaseException) -> bool:
    # httpx is imported only when it raised: the default (aiohttp) path never loads it.
    if not type(e).__module__.startswith("httpx"):
        return False
    import httpx

    return isinstance(e, httpx.TimeoutException)


def _causes(e: BaseException) -> list[BaseException]:
    """`e`'s chain of causes, outermost first."""
    out: list[BaseException] = []
    cause = e.__cause__ or e.__context__
    while cause is not None and cause not in out:
        out.append(cause)
        cause = cause.__cause__ or cause.__context__
    return out


def _is_connect_failure(exc: BaseException) -> bool:
    """An OS-level failure to connect (reset, unreachable, …), as opposed to a timeout."""
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.errno is not None


def _server_message(e: Any) -> str:  # an openai.APIStatusError
    return server_message(e.body) or str(e.message)[:500]


def server_message(body: Any) -> str:
    """The message in an error answer's JSON body (OpenAI's `{"error": {"message": …}}`,
    FastAPI's `{"detail": …}`), "" when it has none."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        detail = body.get("detail")  # FastAPI servers (llama.cpp) use {"detail": …}
        if detail:
            return json.dumps(detail)[:500]
    return ""


def error_code(body: Any) -> str | None:
    """`error.code` of an OpenAI-style error body."""
    inner = body.get("error") if isinstance(body, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return str(code) if code is not None else None
