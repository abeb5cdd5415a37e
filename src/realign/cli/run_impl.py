"""What `realign run` / `realign classify` do, kept out of the option declarations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from realign.cli.common import die, split_csv
from realign.cli.progress import make_progress
from realign.criteria import CriteriaError, CriteriaPack, load_pack
from realign.records import Failure, Record
from realign.runner import RunStopped
from realign.runtime import EngineArgs
from realign.state import RunState, state_path

err = Console(stderr=True)


@dataclass
class RunArgs(EngineArgs):
    criteria: Path | None = None
    pack: str = "realign"
    tasks: str | None = None
    samples: int = 1
    selection: str = "longest"
    force: bool = False
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
    engine: str = "local"  # local | ray (realign.distributed)
    address: str | None = None
    workers: int | None = None


def read_items(args: RunArgs) -> Iterator[Record | Failure]:
    """Records from the input; unreadable ones become `load` failures (never dropped)."""
    from realign.datafiles import read_records

    mapping = args.fields
    fmt = args.input_format or ("fields" if mapping else None)
    for item in read_records(args.input, input_format=fmt, fields=mapping):
        if isinstance(item, Record):
            yield item
        elif item.index is None:  # the file as a whole is unreadable (empty, not UTF-8, …)
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


def submit_deferred(runtime: Any, summary: Any, state: Any) -> int:
    """Batch mode: send the queued requests as one Batch API job; the run goes on later."""
    from realign.batch import BatchError, submit_batch

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
    from realign import pipeline
    from realign.runtime import build_runtime, estimate_run

    pack = load_criteria(args)
    if args.output.resolve() == args.input.resolve():
        raise die("the output must not overwrite the input; choose another -o path")
    if args.selection not in ("longest", "first"):
        raise die(f"--selection {args.selection!r}: use longest or first")
    if args.classifier not in ("llm", "embedding"):
        raise die(f"--classifier {args.classifier!r}: use llm or embedding")
    if not args.input.exists() and not str(args.input).startswith("hf:"):
        raise die(f"{args.input}: no such file")
    check_engine(args)

    options = pipeline.RunOptions(
        tasks=frozenset(split_csv(args.tasks)) or None,
        samples=args.samples,
        force=args.force,
        reclassify=args.reclassify,
        selection=args.selection,
        limit=args.limit,
        min_confidence=args.min_confidence,
        classify_only=args.classify_only,
    )
    if args.dry_run:
        estimate_run(args, pack, options, read_items(args), err)
        return 0

    runtime = build_runtime(args, pack, options, err)
    stages = runtime.stages
    fp = pipeline.fingerprint(args.input, stages, {"output_format": args.output_format})
    state = RunState(state_path(args.output), fp)
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

    written, failed, fails = pipeline.write_outputs(state, args.output, runtime.open_writer)
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
        err.print(
            f"[red]{failed} record(s) failed[/]: see {fails}; rerun the same command to "
            "retry them (answers already paid for come from the cache)."
        )
        return 1
    return 0
