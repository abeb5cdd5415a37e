"""Per-run progress store that makes `realign run` resumable after a crash or kill -9.

One SQLite file beside the output (`.<output name>.realign-state.sqlite`). Finished records
are committed in small batches (at most `COMMIT_EVERY` records or `COMMIT_AFTER_S` seconds
apart, WAL): a commit per record is a WAL write each (~80 µs against ~35 µs batched, as
`benchmarks/cache_bench.py` measures the same SQLite pattern), and a kill loses only the last
batch's progress, whose answers the request cache still holds (the rerun redoes those records
without paying again). The final output is written from it in input order once every record
is done, then it is removed.
A run fingerprint (input, options, criteria, model) guards against resuming a different job.

One run per output at a time: `RunLock` holds an exclusive `flock` on a lock file beside the
state from before the state is read until the outputs are written. The kernel releases it when
the holder exits, however it exits (kill -9 included), so a killed run never blocks its rerun.
A second run on the same output exits at once with a message naming the holder instead of
paying for every request again and racing the first one for the state and the output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def state_path(output: Path) -> Path:
    return output.parent / f".{output.name}.realign-state.sqlite"


def lock_path(state: Path) -> Path:
    return state.with_suffix(".lock")


class RunLocked(RuntimeError):
    """Another process is running on the same output; the message names it."""


class RunLock:
    """An exclusive lock on the run of one output (see the module docstring)."""

    def __init__(self, path: Path, output: Path | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        what = str(output) if output is not None else str(path)
        while True:
            # A file object, not a bare descriptor: one dropped without `release` (an
            # exception in an API caller) is closed by the garbage collector, lock with it.
            f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(f)
                f.close()
                raise _locked(what, holder) from None
            # The holder may have removed the file between our open and its release: a lock
            # on an unlinked file guards nothing, so lock the file now at `path` instead.
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        self._file: IO[bytes] | None = f
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        f.truncate(0)
        f.write(json.dumps(info).encode())
        f.flush()

    def release(self, remove: bool = False) -> None:
        if self._file is None:
            return
        if remove:  # while still holding it, so nobody locks the file being removed
            self.path.unlink(missing_ok=True)
        self._file.close()  # closing the last descriptor releases the flock
        self._file = None


def _locked(what: str, holder: str) -> RunLocked:
    return RunLocked(
        f"another realign run is writing {what} ({holder}); wait for it to finish or stop it, "
        "or choose another -o path"
    )


def probe_lock(output: Path) -> None:
    """Raise `RunLocked` when another process holds the run lock on `output`, without taking
    it or creating any file (the check a command makes before it starts; it takes the lock
    itself with `lock_run` later, before it pays for anything)."""
    path = lock_path(state_path(output))
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return  # no lock file: nobody holds it
    except OSError as e:
        raise RunLocked(f"cannot open the run lock {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked(str(output), _holder(f)) from None
        # Closing the probe's descriptor releases what it just took; a holder's lock is its own.


def _holder(f: IO[bytes]) -> str:
    """Who holds the lock, from what it wrote into the file."""
    try:
        info = json.loads(f.read(4096) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def lock_run(output: Path) -> RunLock:
    """Lock the run on `output` (raises RunLocked), then remove what a killed run on it left:
    the temporary files of its unfinished output and failures writes."""
    lock = RunLock(lock_path(state_path(output)), output)
    from realign.pipeline.record import failures_path  # here: pipeline imports this module

    for done in (output, failures_path(output)):
        partial_path(done).unlink(missing_ok=True)
    return lock


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (an atomic write)."""
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    """Write the text file `path` whole or not at all: through `partial_path(path)`, renamed
    into place when the block ends without an error (a kill leaves the previous file)."""
    tmp = partial_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


COMMIT_EVERY = 64
COMMIT_AFTER_S = 0.1


class RunState:
    def __init__(self, path: Path, fingerprint: str, lock: RunLock | None = None) -> None:
        """The state at `path`, under `lock` (taken here when not given)."""
        self.path = path
        self.resumed = False
        self.restarted_because = ""
        self._lock = lock or RunLock(lock_path(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS done (idx INTEGER PRIMARY KEY, ok INTEGER, payload TEXT)"
        )
        # Answers by request key, for jobs whose unit of work is a request (`realign judge`):
        # see `AnswerJournal`.
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT)")
        row = self._db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
        if row is not None and row[0] != fingerprint:
            # A different job wrote this state: start over (the request cache keeps paid answers).
            self._db.execute("DELETE FROM done")
            self._db.execute("DELETE FROM answers")
            self.restarted_because = "the input, options, criteria or model changed"
        elif row is not None:
            # Failures are not final: a rerun retries them (successes come from the state).
            self._db.execute("DELETE FROM done WHERE ok=0")
            self.resumed = self.count() > 0 or self.count_answers() > 0
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('fingerprint', ?)", (fingerprint,)
        )
        self._pending = 0
        self._batch_started = 0.0

    def is_done(self, index: int) -> bool:
        return self._db.execute("SELECT 1 FROM done WHERE idx=?", (index,)).fetchone() is not None

    def commit(self, index: int, ok: bool, payload: str) -> None:
        """Record `index` as done; durable with its batch (`flush`)."""
        if not self._db.in_transaction:
            self._db.execute("BEGIN")
            self._batch_started = time.monotonic()
        # INSERT OR IGNORE: a record is committed exactly once even if it were processed twice.
        self._db.execute(
            "INSERT OR IGNORE INTO done (idx, ok, payload) VALUES (?, ?, ?)",
            (index, int(ok), payload),
        )
        self._pending += 1
        if (
            self._pending >= COMMIT_EVERY
            or time.monotonic() - self._batch_started >= COMMIT_AFTER_S
        ):
            self.flush()

    def flush(self) -> None:
        """Make every record committed so far durable."""
        if self._db.in_transaction:
            self._db.execute("COMMIT")
        self._pending = 0

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

    def answer(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM answers WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def keep_answer(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", (key, value))

    def forget_answer(self, key: str) -> None:
        self._db.execute("DELETE FROM answers WHERE key=?", (key,))

    def count_answers(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self, remove: bool = False) -> None:
        """Close (and with `remove`, delete) the state, then release the run's lock."""
        self.flush()
        self._db.close()
        if remove:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        self._lock.release(remove=remove)


class AnswerJournal:
    """The engine's cache for a job whose units are requests (`realign judge`): every answer
    is kept in the run state as it arrives, so a stopped run resumes without paying again for
    what it already received, with or without the request cache (`inner`, consulted next)."""

    def __init__(self, state: RunState, inner: Any | None) -> None:
        self.state = state
        self.inner = inner

    def get(self, key: str) -> str | None:
        hit = self.state.answer(key)
        if hit is None and self.inner is not None:
            hit = self.inner.get(key)
        return hit

    def set(self, key: str, value: str, stage: str = "") -> None:
        self.state.keep_answer(key, value)
        if self.inner is not None:
            self.inner.set(key, value, stage=stage)

    def delete(self, key: str) -> None:  # an answer that did not validate is asked again
        self.state.forget_answer(key)
        if self.inner is not None:
            self.inner.delete(key)
