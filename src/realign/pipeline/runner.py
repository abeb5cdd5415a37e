"""The loop every dataset command shares (`run`, `retrieve`, `rephrase`, `generate`, `filter`):
resumable, ordered, bounded.

Generic over the work done per item: items are
processed concurrently inside a window of `window` items; each result (or failure) is
committed to the `RunState` on its own, so a crash or kill loses at most the items in flight;
the outputs are written from the state in input order once everything is done. An engine stop
(budget cap, circuit breaker) ends the loop cleanly with `RunStopped`: rerunning resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from realign.hashing import digest
from realign.llm.engine import BudgetExceeded, Deferred, StructuredOutputError
from realign.llm.ratelimit import CircuitOpen
from realign.pipeline.state import RunState, atomic_text
from realign.records import Failure

__all__ = [
    "STOPS",
    "RunCounts",
    "RunStopped",
    "StageError",
    "fingerprint",
    "process_items",
    "write_failures",
]

# The engine's budget cap and circuit breaker stop the whole run cleanly (resumable).
STOPS = (BudgetExceeded, CircuitOpen)


class RunStopped(RuntimeError):
    """The run stopped early but cleanly; rerunning the same command resumes it."""


class StageError(RuntimeError):
    """An item's failure in a named stage, with the model's last raw output when there is one."""

    def __init__(self, stage: str, message: str, raw_output: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.raw_output = raw_output


class Item(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=Item)
Done = Callable[[BaseModel | Failure], None]


@dataclass
class RunCounts:
    read: int = 0
    resumed: int = 0
    ok: int = 0
    failed: int = 0
    pending: int = 0  # batch mode: waiting for Batch API answers, not committed


def _failure(item: Item, stage: str, exc: Exception, record: dict[str, Any]) -> Failure:
    if isinstance(exc, StageError):  # the stage that failed names itself
        return Failure(
            id=item.id,
            index=item.index,
            stage=exc.stage,
            error=str(exc),
            raw_output=exc.raw_output,
            record=record,
        )
    raw = exc.raw_output if isinstance(exc, StructuredOutputError) else None
    return Failure(
        id=item.id,
        index=item.index,
        stage=stage,
        error=f"{type(exc).__name__}: {exc}",
        raw_output=raw,
        record=record,
    )


def _unsaveable(
    out: BaseModel, index: int, stage: str, error: Exception, record: dict[str, Any] | None
) -> Failure:
    """The failure that replaces a result the run state cannot store (text that is not UTF-8,
    such as a lone surrogate in a model's answer), naming where that text is."""
    from realign.io.objects import surrogate_field

    def text(s: str) -> str:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")

    if isinstance(out, Failure):  # a failure keeps its error, with the surrogate escaped
        return Failure(
            id=text(out.id),
            index=index,
            stage=out.stage,
            error=text(out.error),
            raw_output=None if out.raw_output is None else text(out.raw_output),
            record={} if surrogate_field(out.record) else out.record,
        )
    where = surrogate_field(out.model_dump()) or "a field"
    return Failure(
        id=text(str(getattr(out, "id", index))),
        index=index,
        stage=stage,
        error=f"the result cannot be saved: {where} holds a lone surrogate, which is not "
        f"UTF-8 text ({type(error).__name__})",
        record={} if record is None or surrogate_field(record) else record,
    )


def _finished(running: set[asyncio.Task[Any]], slots: asyncio.Semaphore, task: Any) -> None:
    running.discard(task)
    slots.release()


async def process_items(
    items: Iterable[T | Failure],
    state: RunState,
    work: Callable[[T], Awaitable[BaseModel]],
    *,
    stage: str,
    window: int,
    record_of: Callable[[T], dict[str, Any]],
    limit: int | None = None,
    on_done: Done | None = None,
) -> RunCounts:
    """Run `work` on every item not yet in `state`; commit each result or `Failure`.

    `items` may contain `Failure`s (e.g. unreadable inputs): they are committed as they are.
    `record_of(item)` is what a failure line carries so the input is never lost. Only the first
    `limit` items are read.
    """
    counts = RunCounts()
    slots = asyncio.Semaphore(window)
    stop: list[BaseException] = []
    running: set[asyncio.Task[None]] = set()

    def commit(out: BaseModel | Failure, index: int, item: T | None = None) -> None:
        try:
            payload = out.model_dump_json()
        except ValueError as e:  # a lone surrogate (from a model's answer) is not UTF-8
            out = _unsaveable(out, index, stage, e, None if item is None else record_of(item))
            payload = out.model_dump_json()
        ok = not isinstance(out, Failure)
        state.commit(index, ok, payload)
        if ok:
            counts.ok += 1
        else:
            counts.failed += 1
        if on_done is not None:
            on_done(out)

    async def handle(item: T) -> None:
        try:
            out: BaseModel | Failure = await work(item)
        except STOPS as e:
            stop.append(e)
            return
        except Deferred:  # queued for the Batch API: done on a later run, from the cache
            counts.pending += 1
            return
        except Exception as e:  # any error of one item is that item's failure, not the run's
            out = _failure(item, stage, e, record_of(item))
        commit(out, item.index, item)

    try:
        for item in items:
            if stop or (limit is not None and counts.read >= limit):
                break
            counts.read += 1
            if state.is_done(item.index):
                counts.resumed += 1
                continue
            if isinstance(item, Failure):
                commit(item, item.index)
                continue
            await slots.acquire()
            if stop:
                slots.release()
                break
            task = asyncio.create_task(handle(item))
            running.add(task)
            task.add_done_callback(lambda t: _finished(running, slots, t))
    except Exception:
        # The input failed as a whole: let the items in flight finish and be committed before
        # the error stops the run (the state and cache stay open until then).
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        raise
    if running:
        await asyncio.gather(*running)
    if stop:
        raise RunStopped(f"{type(stop[0]).__name__}: {stop[0]}")
    return counts


def results(state: RunState, model: type[BaseModel]) -> Iterator[Any]:
    """The committed results, in input order, as `model` instances (streamed)."""
    for payload in state.iter_payloads(ok=True):
        yield model.model_validate_json(payload)


def write_failures(state: RunState, path: Path, extra: Iterable[Failure] = ()) -> int:
    """Write `<OUTPUT stem>.failures.jsonl` (always, so a stale one never lingers), atomically."""
    n = 0
    with atomic_text(path) as f:
        for payload in state.iter_payloads(ok=False):
            f.write(payload + "\n")
            n += 1
        for fail in extra:
            f.write(fail.model_dump_json() + "\n")
            n += 1
    return n


def fingerprint(command: str, input_path: Path, settings: dict[str, Any]) -> str:
    """Identifies a job, so a changed input, option or model never resumes old progress."""
    st = input_path.stat() if input_path.exists() else None
    if input_path.is_dir():  # a folder of text files: its files' sizes and times
        files = sorted(p for p in input_path.rglob("*") if p.is_file())
        stamp: Any = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    else:
        stamp = (st.st_size, st.st_mtime_ns) if st else None
    return digest(
        {"command": command, "input": str(input_path.resolve()), "stamp": stamp, **settings}
    )
