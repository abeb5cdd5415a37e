"""One content hash for everything realign identifies by what it contains: a request's cache
key, a cached search, a run's or job's fingerprint, a local search index."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(data: Any) -> str:
    """SHA-256 (hex) of `data` as canonical JSON: keys sorted, text as UTF-8 rather than
    `\\u` escapes, and anything JSON has no type for (a path, a date) as its `str()`.

    The bytes must never change: cache keys computed with it live on in
    `$REALIGN_HOME/cache.sqlite`, and a changed key re-pays every cached request.
    """
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
