"""What `realign run` / `realign classify` do, kept out of the option declarations.

The flags (`RunArgs`) become typed settings here, at the CLI's edge: `RunSettings` and
`EngineOptions` for building the run (`pipeline/build.py`), `RunOptions` for its stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from realign.cli.common import die, lock_output, split_csv, usage_errors
from realign.cli.console import make_console
from realign.cli.job import engine_rows, failed_note, open_job, run_job
from realign.cli.options import EngineArgs
from realign.criteria import CriteriaError, CriteriaPack, load_pack
from realign.llm.build import EngineOptions
from realign.pipeline.build import RunSettings
from realign.pipeline.inputs import DEFAULT_MAX_RECORD_MB, open_input, read_items
from realign.pipeline.record import RunOptions
from realign.pipeline.runner import fingerprint
from realign.records import Failure

err = make_console()


@dataclass
class RunArgs(EngineArgs):
    """The flags of `realign run` / `realign classify`, as typer hands them over."""

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

    def engine_options(self) -> EngineOptions:
        return replace(super().engine_options(), batch=self.batch)

    def settings(self) -> RunSettings:
        return RunSettings(
            input=self.input,
            output=self.output,
            engine=self.engine_options(),
            classifier=self.classifier,
            classify_only=self.classify_only,
            retrieval=self.retrieval,
            search_endpoint=self.search_endpoint,
            input_format=self.input_format,
            output_format=self.output_format,
            fields=self.fields,
            max_record_mb=self.max_record_mb,
            distributed=self.engine == "ray",
            address=self.address,
            workers=self.workers,
        )


def run(input: str | Path, output: str | Path, **options: Any) -> int:
    """`realign run INPUT -o OUTPUT` with the same options (as keyword arguments, underscores
    for dashes). Returns the command's exit status (0 ok, 1 some records failed, 3 stopped).
    `realign.run` is this: the Python API's whole-file run is the command itself."""
    return run_command(RunArgs(input=Path(input), output=Path(output), **options))


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


def summary_table(summary: Any, engine: Any, seconds: float, command: str = "run") -> Table:
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
    engine_rows(t, engine)
    t.add_row("time", f"{seconds:.1f}s")
    if summary.output:
        t.add_row("output", str(summary.output))
    if summary.failures:
        t.add_row("failures", str(summary.failures))
    return t


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


def check_args(args: RunArgs) -> None:
    """What the flags alone make impossible: `error:` and exit 2 before any work."""
    if args.selection not in (None, "longest", "first"):
        raise die(f"--selection {args.selection!r}: use longest or first")
    from realign.stages.filter import PRESETS

    if args.filter_preset not in PRESETS:
        raise die(f"--filter-preset {args.filter_preset!r}: use {' | '.join(PRESETS)}")
    if args.classifier not in ("llm", "embedding"):
        raise die(f"--classifier {args.classifier!r}: use llm or embedding")
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
    with usage_errors():
        return _run(args)


def _run(args: RunArgs) -> int:
    from realign.pipeline import record as pipeline
    from realign.pipeline.build import build_runtime
    from realign.pipeline.inputs import check_input, check_output

    pack = load_criteria(args)
    check_input(args.input)
    check_output(args.output, args.input)
    check_args(args)
    settings = args.settings()
    reader = open_input(settings.input, settings.input_format, settings.fields, args.max_record_mb)
    options = run_options(args, pack)
    if args.dry_run:
        from realign.pipeline.estimate import estimate_run

        estimate_run(settings, pack, options, read_items(reader, args.output), err)
        return 0

    lock = lock_output(args.output)  # before anything is paid for
    runtime = build_runtime(settings, pack, options, err)
    stages = runtime.stages
    fp = fingerprint(
        "run", args.input, {**stages.fingerprint_data(), "output_format": args.output_format}
    )
    job = open_job("realign", args.output, fp, err, lock=lock, engine=stages.engine)
    job.closers.append(runtime.aclose)
    state = job.state
    summary = pipeline.RunSummary()

    def note() -> str:
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

    async def local(done: Any) -> None:
        await pipeline.run_records(
            stages,
            read_items(reader, args.output),
            state,
            summary,
            window=runtime.window,
            on_done=done,
        )

    def ray(done: Any) -> None:
        from realign.distributed.run import run_records_ray

        run_records_ray(
            settings,
            stages,
            read_items(reader, args.output),
            state,
            summary,
            run_id=fp[:16],
            on_done=done,
            make_console=make_console,
        )

    code = run_job(
        job,
        ray if settings.distributed else local,
        total=runtime.total_records,
        note=note,
        description="classify" if args.classify_only else "realign",
    )
    if code is not None:
        return code
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
            stages.engine,
            time.monotonic() - job.started,
            command="classify" if args.classify_only else "run",
        )
    )
    if failed:
        err.print(failed_note(failed, unreadable, fails))
        return 1
    return 0
