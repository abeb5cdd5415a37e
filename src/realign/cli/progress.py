"""The progress display every long command shows on stderr (records done, counts, spend, ETA).

On a terminal: a bar, with the free-text `note` (counts, tokens, spend, …) on its own line
under it, so that a long note on an 80-column terminal wraps instead of squeezing the bar and
the counts down to ellipses. Elsewhere (a log file, a pipe, CI): a first line within
FIRST_LINE_SECONDS (even before a record is done, so a slow start does not look like a hang),
then a plain line every N records or every M seconds, so a long run's log shows how far it got.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

BAR_WIDTH = 24  # leaves room for description, counts and times on an 80-column terminal
LINE_SECONDS = 30.0  # without a terminal: a line at least this often
FIRST_LINE_SECONDS = 10.0  # … and the first one this soon, whatever is done by then
HEARTBEAT_SECONDS = 1.0  # how often the time-based lines are checked for
LINE_SHARE = 0.05  # … and one each time this share of a known total is done
LINE_RECORDS = 100  # … or, when the total is unknown, every this many records


class _Count(ProgressColumn):
    """`done/total`, or `done` while the total is unknown (it may be set later)."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task: Task) -> Text:
        total = f"/{task.total:.0f}" if task.total is not None else ""
        return Text(f"{task.completed:.0f}{total}")


class _Bar(Progress):
    """The terminal display: one table row per task, its note under it."""

    def get_renderables(self) -> Iterable[RenderableType]:
        for task in self.tasks:
            if not task.visible:
                continue
            yield self.make_tasks_table([task])
            note = task.fields.get("note")
            if note:
                yield Padding(Text(str(note), style="dim", overflow="fold"), (0, 0, 0, 2))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Lines(Progress):
    """The same interface without a live display: prints a plain line when a record count
    step or a time interval has passed since the last line, and a last line when stopped."""

    def __init__(
        self,
        *args: Any,
        every: int | None,
        seconds: float,
        first: float = FIRST_LINE_SECONDS,
        heartbeat: float | None = HEARTBEAT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, disable=True, **kwargs)
        self.every = every
        self.seconds = seconds
        self.first = first
        self.heartbeat = heartbeat
        self._printed: dict[TaskID, tuple[float, float]] = {}  # task → (completed, time)
        self._emitting = threading.Lock()  # the heartbeat thread and the work both print
        self._stopping = threading.Event()
        self._beat: threading.Thread | None = None

    def _step(self, task: Task) -> float:
        if self.every is not None:
            return self.every
        if task.total:
            return max(1.0, task.total * LINE_SHARE)
        return LINE_RECORDS

    def line(self, task: Task) -> str:
        done = f"{task.completed:.0f}"
        if task.total:
            done += f"/{task.total:.0f} ({task.completed / task.total:.0%})"
        parts = [f"{task.description}: {done}", f"elapsed {_clock(task.elapsed)}"]
        if task.total and not task.finished:
            parts.append(f"left {_clock(task.time_remaining)}")
        if task.fields.get("note"):
            parts.append(str(task.fields["note"]))
        return " · ".join(parts)

    def _emit(self, task_id: TaskID, *, final: bool = False) -> None:
        with self._emitting:
            task = self._tasks[task_id]
            now = self.get_time()
            started = now if task.start_time is None else task.start_time
            printed = task_id in self._printed
            last_done, last_time = self._printed.get(task_id, (0.0, started))
            new = task.completed != last_done
            if final:
                due = new
            else:
                interval = self.seconds if printed else self.first
                due = (
                    task.completed - last_done >= self._step(task)
                    or now - last_time >= interval  # a line even when nothing new: alive
                    or (task.finished and new)
                )
            if due:
                self._printed[task_id] = (task.completed, now)
                # markup/highlight off: the note and description are data, not rich markup
                self.console.print(self.line(task), markup=False, highlight=False, soft_wrap=True)

    def _beating(self) -> None:
        assert self.heartbeat is not None
        while not self._stopping.wait(self.heartbeat):
            for task_id in list(self._tasks):
                self._emit(task_id)

    def start(self) -> None:
        super().start()
        if self.heartbeat is not None and self._beat is None:
            self._beat = threading.Thread(target=self._beating, name="progress-lines", daemon=True)
            self._beat.start()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._emit(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._emit(task_id)

    def stop(self) -> None:
        self._stopping.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        for task_id in self._tasks:
            self._emit(task_id, final=True)
        super().stop()


def make_progress(
    console: Console,
    total: int | None,
    *,
    every: int | None = None,
    seconds: float = LINE_SECONDS,
    first: float = FIRST_LINE_SECONDS,
    heartbeat: float | None = HEARTBEAT_SECONDS,
    get_time: Callable[[], float] | None = None,
) -> Progress:
    """A progress display with a free-text `note` field: a live bar when `console` is a
    terminal, else plain lines: the first after `first` seconds at most, then every `every`
    records (default 5% of the total) or every `seconds`, checked every `heartbeat` seconds
    (None: only when the work reports). The closing summary is the caller's to print.

    `total` is not used any more (each task carries its own, which may be set later, as the
    judge does); it stays so that the callers' `make_progress(console, total)` still reads."""
    if not console.is_terminal:
        return _Lines(
            console=console,
            get_time=get_time,
            every=every,
            seconds=seconds,
            first=first,
            heartbeat=heartbeat,
        )
    fixed = Column(no_wrap=True)
    return _Bar(
        TextColumn("[bold]{task.description}", table_column=fixed),
        BarColumn(bar_width=BAR_WIDTH),
        _Count(),
        TimeElapsedColumn(table_column=fixed),
        TimeRemainingColumn(table_column=fixed),
        console=console,
        get_time=get_time,
    )
