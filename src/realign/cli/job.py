"""The one resumable job every dataset command runs (`run`, `classify`, `retrieve`, `judge`,
`rephrase`, `generate`, `filter`):

    lock the output → open the run state (resume or start over) → progress → run the work
    (Ctrl-C, budget and circuit-breaker stops end it cleanly, resumable) → the command writes
    its output and prints its summary rows → the state is removed.

A command supplies only its work function, its writer and its summary rows.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from realign.cli.common import lock_output
from realign.cli.progress import make_progress
from realign.llm.build import close_all
from realign.llm.engine import Engine
from realign.pipeline.record import failures_path
from realign.pipeline.runner import STOPS, RunStopped, write_failures
from realign.pipeline.state import RunState, state_path
from realign.records import Failure

Done = Callable[[Any], None]


class Tick:
    """What the work calls as each unit is done (`tick(out)`); `set_total` when the number of
    units is known only once the work has started (the judge matches its pairs first)."""

    def __init__(self, progress: Any, task: Any, on_done: Callable[[Any], None]) -> None:
        self.progress, self.task, self.on_done = progress, task, on_done

    def __call__(self, out: Any = None) -> None:
        self.on_done(out)

    def set_total(self, total: int) -> None:
        self.progress.update(self.task, total=total)


@dataclass
class Job:
    """One resumable run of a command: its state beside the output, its engine, its counts."""

    name: str
    console: Console
    state: RunState
    engine: Engine | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)
    what: str = "records"  # what the progress counts, for messages
    started: float = field(default_factory=time.monotonic)
    tally: Counter[str] = field(default_factory=Counter)  # counts shown in the progress note
    failed: int = 0  # failures in this run so far

    async def aclose(self) -> None:
        closers, self.closers = self.closers, []
        await close_all(closers)


def open_job(
    name: str,
    output: Path,
    fingerprint: str | Callable[[], str],
    console: Console,
    *,
    lock: Any | None = None,
    engine: Engine | None = None,
    closers: Iterable[Callable[[], Any]] = (),
    what: str = "records",
) -> Job:
    """The job's run state, resumed when the same job (same `fingerprint`: input, options,
    model) ran before and stopped. The output's lock is taken here unless the caller took it
    before paying for anything."""
    lock = lock if lock is not None else lock_output(output)
    fp = fingerprint() if callable(fingerprint) else fingerprint
    state = RunState(state_path(output), fp, lock)
    if state.restarted_because:
        console.print(f"[yellow]previous progress discarded: {state.restarted_because}[/]")
    elif state.resumed:
        console.print(f"resuming: {state.count() + state.count_answers()} {what} already done")
    return Job(name, console, state, engine, list(closers), what)


def run_job(
    job: Job,
    work: Callable[[Tick], Any],
    *,
    total: int | None,
    note: Callable[[], str] = lambda: "",
    description: str | None = None,
    on_done: Done | None = None,
    done_before: int | None = None,
    late_total: Callable[[], int | None] | None = None,
) -> int | None:
    """Run `work(tick)` (a coroutine function, or a blocking one such as Ray's driver) under
    a progress display, then close the job's engine. None when the work finished; else the
    exit code 3 of a clean stop (budget, circuit breaker, Ctrl-C), after saying how to resume
    (the state stays). With `total` None, `late_total` (e.g. counting a .json array) runs in a
    thread while the work starts, and the display gets its total (N/total, ETA) when known."""
    progress = make_progress(job.console, total)
    task = progress.add_task(description or job.name, total=total, note=note())

    def done(out: Any) -> None:
        job.failed += isinstance(out, Failure)
        if on_done is not None:
            on_done(out)
        progress.update(task, advance=1, note=note())

    tick = Tick(progress, task, done)
    counting: threading.Thread | None = None
    if total is None and late_total is not None:
        count = late_total

        def set_total() -> None:
            if (n := count()) is not None:
                tick.set_total(n)

        counting = threading.Thread(target=set_total, name="count-records", daemon=True)
        counting.start()

    stopped = ""
    with progress:
        before = job.state.count() if job.state.resumed else 0
        progress.update(task, advance=before if done_before is None else done_before)
        try:
            _drive(job, work, tick)
            if counting is not None:  # the work read the whole input: the count is as quick
                counting.join()
        except (RunStopped, *STOPS) as e:
            stopped = str(e)
        except KeyboardInterrupt:
            stopped = "interrupted"
        except BaseException:
            job.state.close()  # progress so far stays; the error is the caller's to report
            raise
    if stopped:
        saved = job.state.count() + job.state.count_answers()
        job.state.close()
        job.console.print(
            f"[yellow]stopped: {stopped}[/]\n{saved} {job.what} are saved; rerun the same "
            "command to resume."
        )
        return 3
    return None


def _drive(job: Job, work: Callable[[Tick], Any], done: Tick) -> None:
    if inspect.iscoroutinefunction(work):

        async def main() -> None:
            try:
                await work(done)
            finally:
                await job.aclose()

        asyncio.run(main())
        return
    try:  # a blocking driver (Ray's) runs outside any event loop
        work(done)
    finally:
        asyncio.run(job.aclose())


def engine_rows(table: Table, engine: Engine | None) -> None:
    """The engine's summary rows: requests, tokens, cost, retries."""
    if engine is None:
        return
    stats = engine.stats
    table.add_row("requests", f"{stats.requests} ({stats.cache_hits} from cache)")
    table.add_row("tokens in/out", f"{stats.prompt_tokens} / {stats.completion_tokens}")
    if stats.cost_usd:
        table.add_row("cost", f"${stats.cost_usd:.4f}")
    if stats.retries or stats.rate_limited:
        table.add_row("retries / 429s", f"{stats.retries} / {stats.rate_limited}")


def failed_note(failed: int, unreadable: int, fails: Path, what: str = "record(s)") -> str:
    """What to do about the failures: a rerun retries those of the stages, but a record that
    could not be read from the input fails again until the input is fixed."""
    note = f"[red]{failed} {what} failed[/]: see {fails}"
    if unreadable == failed:
        return f"{note}; they could not be read from the input: fix them there and rerun."
    retry = "rerun the same command to retry them (answers already paid for come from the cache)."
    if unreadable:
        return (
            f"{note}; {unreadable} could not be read from the input: fix them there; "
            f"for the other {failed - unreadable}, {retry}"
        )
    return f"{note}; {retry}"


def finish(job: Job, output: Path, extra_failures: Iterable[Failure], table: Table) -> int:
    """For a job whose results are not records in input order (`rephrase`, `generate`,
    `filter`): the failures file, the summary rows under the command's own, the state
    removed; the exit code (1 when anything failed)."""
    fails = failures_path(output)
    extra = list(extra_failures)
    failed = write_failures(job.state, fails, extra)
    unreadable = sum(f.stage == "load" for f in extra) + sum(
        Failure.model_validate_json(p).stage == "load" for p in job.state.iter_payloads(ok=False)
    )
    job.state.close(remove=True)
    table.add_row("failed", str(failed))
    engine_rows(table, job.engine)
    table.add_row("time", f"{time.monotonic() - job.started:.1f}s")
    table.add_row("output", str(output))
    job.console.print(table)
    if failed:
        job.console.print(failed_note(failed, unreadable, fails, "item(s)"))
        return 1
    fails.unlink(missing_ok=True)
    return 0
