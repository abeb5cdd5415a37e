"""Per-run progress store that makes `realign run` resumable after a crash or kill -9.

One SQLite file beside the output (`.<output name>.realign-state.sqlite`). Each finished
record is committed on its own (WAL, so a kill loses at most the record being written); the
final output is written from it in input order once every record is done, then it is removed.
A run fingerprint (input, options, criteria, model) guards against resuming a different job.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path


def state_path(output: Path) -> Path:
    return output.parent / f".{output.name}.realign-state.sqlite"


class RunState:
    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.resumed = False
        self.restarted_because = ""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS done (idx INTEGER PRIMARY KEY, ok INTEGER, payload TEXT)"
        )
        row = self._db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is not None and row[0] != fingerprint:
            # A different job wrote this state: start over (the request cache keeps paid answers).
            self._db.execute("DELETE FROM done")
            self.restarted_because = "the input, options, criteria or model changed"
        elif row is not None:
            # Failures are not final: a rerun retries them (successes come from the state).
            self._db.execute("DELETE FROM done WHERE ok=0")
            self.resumed = self.count() > 0
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('fingerprint', ?)", (fingerprint,)
        )

    def is_done(self, index: int) -> bool:
        return self._db.execute("SELECT 1 FROM done WHERE idx=?", (index,)).fetchone() is not None

    def commit(self, index: int, ok: bool, payload: str) -> None:
        # INSERT OR IGNORE: a record is committed exactly once even if it were processed twice.
        self._db.execute(
            "INSERT OR IGNORE INTO done (idx, ok, payload) VALUES (?, ?, ?)",
            (index, int(ok), payload),
        )

    def count(self, ok: bool | None = None) -> int:
        if ok is None:
            return self._db.execute("SELECT COUNT(*) FROM done").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM done WHERE ok=?", (int(ok),)).fetchone()[0]

    def iter_payloads(self, ok: bool) -> Iterator[str]:
        """Payloads in input order, streamed (memory does not grow with the run)."""
        cur = self._db.execute("SELECT payload FROM done WHERE ok=? ORDER BY idx", (int(ok),))
        while rows := cur.fetchmany(500):
            for (payload,) in rows:
                yield payload

    def close(self, remove: bool = False) -> None:
        self._db.close()
        if remove:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
