"""Per-request answer cache in one SQLite file (WAL), so no request is ever paid for twice.

The key is `ChatRequest.cache_key(backend_id)`: a hash of everything that determines the
answer (model, parameters, messages, output schema, backend and base URL), never of the whole
run, so editing one record or one criterion re-pays only the requests that changed. Non-LLM
calls (search) are stored under `"<kind>:<key>"`.

Concurrency: one connection per process, used from the event loop thread. Each `set` is its
own autocommitted transaction: with WAL and `synchronous=NORMAL` a commit is a write to the
WAL without fsync (~80 µs measured by `benchmarks/cache_bench.py`, vs ~35 µs batched: not
worth losing answers on a crash), and it survives a kill -9 of
the process (only an OS crash can lose the last commits). Several processes may share the file:
WAL lets readers run beside one writer, and `busy_timeout` makes writers queue instead of fail.

What is stored: the response text(s) and token usage. Never request headers or API keys;
response headers are dropped before storing.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from realign.config import realign_home

_SCHEMA_VERSION = 1


def default_cache_path() -> Path:
    """`$REALIGN_CACHE` if set, else `$REALIGN_HOME/cache.sqlite`."""
    env = os.environ.get("REALIGN_CACHE")
    return Path(env).expanduser() if env else realign_home() / "cache.sqlite"


class CacheInfo(BaseModel):
    path: str
    exists: bool
    entries: int = 0
    size_bytes: int = 0  # database + WAL file
    by_stage: dict[str, int] = {}
    oldest: datetime | None = None
    newest: datetime | None = None


class Cache:
    """`get(key) -> str | None`, `set(key, value, stage=...)`, `delete(key)`; see the module
    docstring."""

    def __init__(self, path: Path | str | None = None, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path,
                isolation_level=None,  # autocommit: each set() is durable on its own
                check_same_thread=False,  # the engine may be driven from a worker thread
                timeout=busy_timeout_s,
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            raise CacheError(f"{self.path}: cannot open the cache: {e}") from e
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def _init_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise CacheError(
                f"{self.path}: cache schema version {version} is not supported "
                f"(expected {_SCHEMA_VERSION}); use another --cache path or `realign cache clear`"
            )
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS entries (
                key TEXT PRIMARY KEY,
                stage TEXT NOT NULL DEFAULT '',
                created REAL NOT NULL,
                value TEXT NOT NULL
            ) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS entries_stage ON entries(stage);
            """
        )
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM entries WHERE key=?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0]

    def set(self, key: str, value: str, stage: str = "") -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO entries (key, stage, created, value) VALUES (?, ?, ?, ?)",
            (key, stage, time.time(), value),
        )
        self.writes += 1

    def delete(self, key: str) -> None:
        self._db.execute("DELETE FROM entries WHERE key=?", (key,))

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM entries WHERE key=?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def info(self) -> CacheInfo:
        return cache_info(self.path, db=self._db)

    def clear(self, stage: str | None = None) -> int:
        """Delete every entry (or one stage's); returns how many were deleted."""
        if stage is None:
            n = self._db.execute("DELETE FROM entries").rowcount
        else:
            n = self._db.execute("DELETE FROM entries WHERE stage=?", (stage,)).rowcount
        # Give the space back: checkpoint the WAL into the file, then shrink the file.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        return n

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CacheError(RuntimeError):
    """The cache file cannot be used; the message names the file."""


def check_cache(path: Path) -> None:
    """Raise `CacheError` unless `path` is missing (it is created on first use) or a realign
    cache of a supported version; reads only (a command checks this before it starts)."""
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise CacheError(f"{path}: cannot open the cache: {e}") from e
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version:
            conn.execute("SELECT 1 FROM entries LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise CacheError(f"{path}: not a realign cache: {e}") from e
    finally:
        conn.close()
    if version not in (0, _SCHEMA_VERSION):
        raise CacheError(
            f"{path}: cache schema version {version} is not supported (expected "
            f"{_SCHEMA_VERSION}); use another cache (REALIGN_CACHE) or `realign cache clear`"
        )


def cache_info(path: Path, *, db: sqlite3.Connection | None = None) -> CacheInfo:
    """What is in the cache at `path`, without creating it when it does not exist."""
    if db is None and not path.exists():
        return CacheInfo(path=str(path), exists=False)
    own = db is None
    conn = db or sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        by_stage = dict(
            conn.execute("SELECT stage, COUNT(*) FROM entries GROUP BY stage ORDER BY stage")
        )
        oldest, newest = conn.execute("SELECT MIN(created), MAX(created) FROM entries").fetchone()
    except sqlite3.DatabaseError as e:
        raise CacheError(f"{path}: not a realign cache: {e}") from e
    finally:
        if own:
            conn.close()
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())

    def when(t: float | None) -> datetime | None:
        return None if t is None else datetime.fromtimestamp(t, tz=UTC)

    return CacheInfo(
        path=str(path),
        exists=True,
        entries=sum(by_stage.values()),
        size_bytes=size,
        by_stage={k or "(none)": v for k, v in by_stage.items()},
        oldest=when(oldest),
        newest=when(newest),
    )
