"""What `realign run` / `realign classify` do, kept out of the option declarations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from realign.cli.common import die, lock_output, split_csv
from realign.cli.console import make_console
from realign.cli.progress import make_progress
from realign.criteria import CriteriaError, CriteriaPack, load_pack
from realign.io.objects import DEFAULT_MAX_RECORD_BYTES
from realign.io.read import RecordReader
from realign.pipeline.runner import RunStopped, fingerprint
from realign.pipeline.runtime import EngineArgs
from realign.pipeline.state import RunState, state_path
from realign.records import Failure, Record

if TYPE_CHECKING:
    from realign.pipeline.record import RunOptions

err = make_console()
DEFAULT_MAX_RECORD_MB = DEFAULT_MAX_RECORD_BYTES / 1_000_000


@dataclass
class RunArgs(EngineArgs):
    criteria: Path | None = None
    pack: str = "realign"
    tasks: str | None = None
    samples: int | None = None  # None: the pack's setting (`pack.yaml`), else 1
    selection: str | None = None
    temperature: float | None = None
    force: bool = False
    filter_preset: str = "default"
    reclassify: bool = False
    classifier: str = "llm"
    min_confidence: float = 0.5
    retrieval: str | None = None
    search_endpoint: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    fields: str | None = None
    classify_only: bool = False
    batch: bool = False
    max_record_mb: float = DEFAULT_MAX_RECORD_MB
    engine: str = "local"  # local | ray (realign.distributed)
    address: str | None = None
    workers: int | None = None


def open_input(
    path: Path,
    input_format: str | None,
    fields: str | None,
    max_record_mb: float = DEFAULT_MAX_RECORD_MB,
) -> RecordReader:
    """The input's reader. What makes the whole input unusable (no such file, a folder, an
    unknown file type or format, empty, UTF-16, not a JSON array) is one `error:` line and
    exit 2 here, before any work or run state."""
    from realign.io.formats import FormatError
    from realign.io.read import read_records

    fmt = input_format or ("fields" if fields else None)
    try:
        reader = read_records(
            path, input_format=fmt, fields=fields, max_record_bytes=int(max_record_mb * 1_000_000)
        )
        _ = reader.format  # detect now: an unknown format fails before any work
        problem = reader.file_error()
    except FormatError as e:
        raise die(str(e)) from None
    if problem is not None:
        raise die(str(problem))
    return reader


def read_items(args: Any, reader: RecordReader | None = None) -> Iterator[Record | Failure]:
    """Records from the input (`reader`, else opened from `args`); unreadable ones become
    `load` failures (never dropped)."""
    if reader is None:
        mb = getattr(args, "max_record_mb", DEFAULT_MAX_RECORD_MB)
        reader = open_input(args.input, args.input_format, args.fields, mb)
    for item in reader:
        if isinstance(item, Record):
            yield item
        elif item.index is None:  # not a record's error: `open_input` stops on these first
            raise die(str(item))
        else:  # a read error: it names the file, line/record and field
            yield item.as_failure("load")


def load_criteria(args: RunArgs) -> CriteriaPack:
    try:
        pack = load_pack(args.pack, args.criteria)
    except CriteriaError as e:
        raise die(f"criteria: {e}") from e
    unknown = [t for t in split_csv(args.tasks) if t not in pack]
    if unknown:
        raise die(
            f"--tasks names {', '.join(unknown)}, not in criteria pack '{pack.name}' "
            f"(see `realign criteria list`)"
        )
    return pack


def run_options(args: RunArgs, pack: CriteriaPack) -> RunOptions:
    """The run's options: the flags given, else the pack's `pack.yaml` defaults (realign-paper:
    ReAlign's prompt, 2 samples at 0.3, longest), else realign's own."""
    from realign.pipeline.record import RunOptions

    given = {"samples": args.samples, "selection": args.selection, "temperature": args.temperature}
    return RunOptions(
        **{**pack.settings.run_defaults(), **{k: v for k, v in given.items() if v is not None}},
        tasks=frozenset(split_csv(args.tasks)) or None,
        force=args.force,
        filter_preset=args.filter_preset,
        reclassify=args.reclassify,
        limit=args.limit,
        min_confidence=args.min_confidence,
        classify_only=args.classify_only,
    )


def summary_table(summary: Any, stats: Any, seconds: float, command: str = "run") -> Table:
    t = Table(title=f"realign {command}", show_header=False, box=None)
    t.add_row("records read", str(summary.read))
    t.add_row("records written", str(summary.written))
    if summary.resumed:
        t.add_row("  already done (resumed)", str(summary.resumed))
    if command == "run":  # `classify` rewrites nothing: every record would show as skipped
        for status in ("rewritten", "kept", "skipped"):
            t.add_row(f"  {status}", str(summary.statuses.get(status, 0)))
    t.add_row("  failed", str(summary.failed))
    if summary.filter_rules:
        rules = ", ".join(f"{k} {v}" for k, v in summary.filter_rules.most_common())
        t.add_row("filter decisions", rules)
    if summary.task_types:
        top = ", ".join(f"{k} {v}" for k, v in summary.task_types.most_common(8))
        t.add_row("task types", top)
    if stats is not None:
        t.add_row("requests", f"{stats.requests} ({stats.cache_hits} from cache)")
        t.add_row("tokens in/out", f"{stats.prompt_tokens} / {stats.completion_tokens}")
        if getattr(stats, "cost_usd", 0):
            t.add_row("cost", f"${stats.cost_usd:.4f}")
        if stats.retries or stats.rate_limited:
            t.add_row("retries / 429s", f"{stats.retries} / {stats.rate_limited}")
    t.add_row("time", f"{seconds:.1f}s")
    if summary.output:
        t.add_row("output", str(summary.output))
    if summary.failures:
        t.add_row("failures", str(summary.failures))
    return t


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


def submit_deferred(runtime: Any, summary: Any, state: Any) -> int:
    """Batch mode: send the queued requests as one Batch API job; the run goes on later."""
    from realign.llm.batch import BatchError, submit_batch

    engine = runtime.stages.engine
    backend = engine.backend
    saved = state.count()
    state.close()
    try:
        job = submit_batch(
            engine.defer_to,
            model=backend.model,
            backend_id=backend.backend_id,
            base_url=getattr(backend, "base_url", None),
        )
    except BatchError as e:
        raise die(str(e)) from e
    err.print(
        f"{summary.pending} record(s) wait for the Batch API ({saved} done). "
        + (f"Submitted batch {job.batch_id} with {len(job.stages)} request(s). " if job else "")
        + "Check it with `realign batch status`, fetch answers with `realign batch collect`, "
        "then rerun this command to go on."
    )
    return 3


def check_engine(args: RunArgs) -> None:
    if args.engine not in ("local", "ray"):
        raise die(f"--engine {args.engine!r}: use local or ray")
    if args.engine == "local":
        if args.address or args.workers:
            raise die("--address and --workers need --engine ray")
        return
    if args.batch or args.max_cost is not None:
        # Both keep run-wide state in one engine (the queued batch, the spend so far).
        raise die("--engine ray does not support --batch or --max-cost; use --engine local")
    from realign.distributed import RayUnavailable, require_ray

    try:
        require_ray()
    except RayUnavailable as e:
        raise die(str(e)) from e


def run_command(args: RunArgs) -> int:
    from realign.pipeline import record as pipeline
    from realign.pipeline.runtime import build_runtime, estimate_run

    pack = load_criteria(args)
    if args.output.resolve() == args.input.resolve():
        raise die("the output must not overwrite the input; choose another -o path")
    if args.selection not in (None, "longest", "first"):
        raise die(f"--selection {args.selection!r}: use longest or first")
    from realign.stages.filter import PRESETS

    if args.filter_preset not in PRESETS:
        raise die(f"--filter-preset {args.filter_preset!r}: use {' | '.join(PRESETS)}")
    if args.classifier not in ("llm", "embedding"):
        raise die(f"--classifier {args.classifier!r}: use llm or embedding")
    open_input(args.input, args.input_format, args.fields, args.max_record_mb)  # exit 2 if unusable
    check_engine(args)

    options = run_options(args, pack)
    if args.dry_run:
        estimate_run(args, pack, options, read_items(args), err)
        return 0

    lock = lock_output(args.output)
    runtime = build_runtime(args, pack, options, err)
    stages = runtime.stages
    fp = fingerprint(
        "run", args.input, {**stages.fingerprint_data(), "output_format": args.output_format}
    )
    state = RunState(state_path(args.output), fp, lock)
    if state.restarted_because:
        err.print(f"[yellow]previous progress discarded: {state.restarted_because}[/]")
    elif state.resumed:
        err.print(f"resuming: {state.count()} records already done")

    summary = pipeline.RunSummary()
    total = runtime.total_records
    started = time.monotonic()
    progress = make_progress(err, total)

    def counts() -> str:
        s = summary.statuses
        parts = [
            f"rw {s.get('rewritten', 0)}",
            f"kept {s.get('kept', 0)}",
            f"skip {s.get('skipped', 0)}",
            f"fail {summary.failed}",
        ]
        st = stages.engine.stats if stages.engine else None
        if st is not None:
            parts.append(f"tok {st.prompt_tokens + st.completion_tokens}")
            parts.append(st.summary())  # spend, req/s, 429s, retries, cached
        return " · ".join(parts)

    task = progress.add_task(
        "realign" if not args.classify_only else "classify", total=total, note=counts()
    )

    def on_done(_: Record | Failure) -> None:
        progress.update(task, advance=1, note=counts())

    async def main() -> None:
        try:
            await pipeline.run_records(
                stages, read_items(args), state, summary, window=runtime.window, on_done=on_done
            )
        finally:
            await runtime.aclose()

    def drive() -> None:
        if args.engine == "local":
            asyncio.run(main())
            return
        from realign.distributed.run import run_records_ray

        try:  # Ray's driver API blocks: it runs outside any event loop
            run_records_ray(
                args, stages, read_items(args), state, summary, run_id=fp[:16], on_done=on_done
            )
        finally:
            asyncio.run(runtime.aclose())

    stopped = ""
    with progress:
        progress.update(task, advance=state.count() if state.resumed else 0)
        try:
            drive()
        except RunStopped as e:
            stopped = str(e)
        except KeyboardInterrupt:
            stopped = "interrupted"
    if stopped:
        saved = state.count()
        state.close()
        err.print(
            f"[yellow]stopped: {stopped}[/]\n{saved} records are saved; rerun the "
            "same command to resume."
        )
        return 3

    if summary.pending:
        return submit_deferred(runtime, summary, state)

    unreadable = 0

    def on_failed(line: Failure) -> None:
        nonlocal unreadable
        unreadable += line.stage == "load"

    written, failed, fails = pipeline.write_outputs(
        state, args.output, runtime.open_writer, on_failed=on_failed
    )
    state.close(remove=True)
    summary.output, summary.failures = args.output, fails
    summary.written, summary.failed = written, failed
    err.print(
        summary_table(
            summary,
            stages.engine.stats if stages.engine else None,
            time.monotonic() - started,
            command="classify" if args.classify_only else "run",
        )
    )
    if failed:
        err.print(failed_note(failed, unreadable, fails))
        return 1
    return 0
