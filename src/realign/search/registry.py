"""Choose a search provider from a `--retrieval` spec: `google`, `serper`, `local:PATH`, `none`.

Providers are imported lazily so `realign --help` and runs without retrieval never load
googleapiclient or bm25s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from realign.search.base import SearchError, SearchProvider


def _google(arg: str, endpoint: str | None, keys: Mapping[str, Any]) -> SearchProvider:
    from realign.search.google import GoogleSearch

    return GoogleSearch(keys.get("google_api_key"), keys.get("google_cse_id"), endpoint=endpoint)


def _serper(arg: str, endpoint: str | None, keys: Mapping[str, Any]) -> SearchProvider:
    from realign.search.serper import SerperSearch

    opts = keys.get("options") or {}
    return SerperSearch(
        keys.get("serper_api_key"),
        endpoint=endpoint,
        country=opts.get("country"),
        language=opts.get("language"),
        style=opts.get("style"),
    )


def _local(arg: str, endpoint: str | None, keys: Mapping[str, Any]) -> SearchProvider:
    from realign.search.local import LocalSearch

    if not arg:
        raise SearchError("other", "local", "give the corpus path: --retrieval local:PATH")
    if endpoint:
        raise SearchError(
            "other", "local", "--search-endpoint does not apply to a local corpus (no HTTP)"
        )
    return LocalSearch(arg)


Factory = Callable[[str, "str | None", Mapping[str, Any]], SearchProvider]

# name → factory(argument after "name:", endpoint, keys)
PROVIDERS: dict[str, Factory] = {"google": _google, "serper": _serper, "local": _local}

SPEC_HELP = "google | serper | local:PATH | none"


def parse_spec(spec: str) -> tuple[str, str]:
    """`"local:docs.jsonl"` → `("local", "docs.jsonl")`; `"google"` → `("google", "")`."""
    name, _, arg = spec.strip().partition(":")
    return name.strip().lower(), arg.strip()


def make_provider(
    spec: str,
    endpoint: str | None = None,
    *,
    google_api_key: str | None = None,
    google_cse_id: str | None = None,
    serper_api_key: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> SearchProvider | None:
    """The provider for `spec`, or None for `none`. Raises SearchError on a bad spec or
    missing keys (kind "auth" for missing keys, naming the environment variable). `options`:
    a pack's search parameters (`country`, `language`, `style`), used by Serper."""
    name, arg = parse_spec(spec)
    if name == "none":
        return None
    factory = PROVIDERS.get(name)
    if factory is None:
        raise SearchError("other", name or spec, f"unknown retrieval '{spec}' (use {SPEC_HELP})")
    keys = {
        "google_api_key": google_api_key,
        "google_cse_id": google_cse_id,
        "serper_api_key": serper_api_key,
        "options": dict(options or {}),
    }
    return factory(arg, endpoint, keys)


def default_retrieval_spec(env: Mapping[str, str]) -> tuple[str, str]:
    """The `--retrieval` default, from the keys the user has: google when both of its keys are
    set, else serper when SERPER_API_KEY is (the one key ReAlign's own instructions set), else
    none; with the one-line message to print on stderr saying which and why."""
    if env.get("GOOGLE_API_KEY") and env.get("GOOGLE_CSE_ID"):
        return "google", "retrieval: google (GOOGLE_API_KEY and GOOGLE_CSE_ID are set)"
    missing = " and ".join(k for k in ("GOOGLE_API_KEY", "GOOGLE_CSE_ID") if not env.get(k))
    if env.get("SERPER_API_KEY"):
        return "serper", f"retrieval: serper (SERPER_API_KEY is set; {missing} not set)"
    return (
        "none",
        f"retrieval: none ({missing} not set, nor SERPER_API_KEY); knowledge task types are "
        "rewritten without evidence. Use --retrieval local:PATH for your own documents offline.",
    )
