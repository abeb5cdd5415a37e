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
from realign.llm.build import EngineOptions, goes_local
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
    filter_preset: str | None = None  # None: the pack's setting (`pack.yaml`), else default
    verify: bool | None = None  # None: the pack's `verify:` (never for the embedded model)
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
    command: str | None = None  # the command line as given (provenance)
    show_prompt: str | None = None  # a record id: print its messages, send nothing

    def with_pack(self, pack: CriteriaPack) -> RunArgs:
        """These flags with the pack's `pack.yaml` filling the ones not given (flags win)."""
        s = pack.settings
        return replace(
            self,
            model=self.model if self.model is not None else s.model,
            retrieval=self.retrieval if self.retrieval is not None else s.retrieval,
            filter_preset=self.filter_preset or s.filter_preset or "default",
        )

    def engine_options(self) -> EngineOptions:
        return replace(super().engine_options(), batch=self.batch)

    def settings(self, pack: CriteriaPack) -> RunSettings:
        """These flags as typed settings, with the pack's search parameters (country, language,
        style)."""
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
            command=self.command,
            search_options=pack.settings.search_options(),
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
    given = {
        "samples": args.samples,
        "selection": args.selection,
        "temperature": args.temperature,
        "verify": args.verify,
    }
    local = not args.classify_only and goes_local(args.engine_options())
    if local and pack.settings.verify and args.verify is None:
        err.print(
            f"criteria pack '{pack.name}' says verify: true, but the embedded model is too "
            "small to judge its own rewrites: verification is off (--verify turns it on)"
        )
    defaults = pack.settings.run_defaults(local=local)
    return RunOptions(
        **{**defaults, **{k: v for k, v in given.items() if v is not None}},
        tasks=frozenset(split_csv(args.tasks)) or None,
        force=args.force,
        filter_preset=args.filter_preset or pack.settings.filter_preset or "default",
        reclassify=args.reclassify,
        limit=args.limit,
        min_confidence=args.min_confidence,
        classify_only=args.classify_only,
        retrieve_k=pack.settings.retrieve_k or RunOptions.retrieve_k,
    )


def acceptance_line(summary: Any, model: str = "the model") -> str:
    """How many rewrites were accepted, and when a run tried some but accepted none, why:
    a bare 0 reads as a bug; `model` names the model ("the embedded model")."""
    tried = summary.attempts
    accepted, total = tried.get("accepted", 0), sum(tried.values())
    line = f"{accepted} of {total} rewrite(s) accepted"
    if accepted or not total:
        return line if total else "no rewrite tried"
    why = []
    if tried.get("filter"):
        fired = {r: n for r, n in summary.filter_rules.most_common() if r != "passed"}
        rules = ", ".join(f"{r} {n}" for r, n in fired.items())
        lost = "only copied the originals" if set(fired) == {"unchanged"} else "lost content"
        why.append(
            f"the filter kept every original (rules: {rules}); {model}'s rewrites {lost} "
            "— use a stronger model (--model / --base-url)"
        )
    if tried.get("format"):
        why.append(
            f"{model} judged the format a poor fit {tried['format']} time(s) (--force rewrites "
            "anyway)"
        )
    if tried.get("truncated"):
        why.append(f"{tried['truncated']} rewrite(s) were cut off twice by the output budget")
    return f"0 rewrites accepted: {'; '.join(why)}"


TASK_TYPES_SHOWN = 8


def top_counts(counts: Any, shown: int) -> str:
    """`a 5, b 3, … +N more (M records)`: the most common, and what was left out."""
    parts = [f"{k} {v}" for k, v in counts.most_common(shown)]
    rest = counts.most_common()[shown:]
    if rest:
        parts.append(f"+{len(rest)} more ({sum(v for _, v in rest)})")
    return ", ".join(parts)


def summary_table(summary: Any, engine: Any, seconds: float, command: str = "run") -> Table:
    t = Table(
        title=f"realign {command}",
        caption="Counts are records; `realign report` also counts responses (assistant turns).",
        caption_justify="left",
        show_header=False,
        box=None,
    )
    t.add_row("records read", str(summary.read))
    t.add_row("records written", str(summary.written))
    if summary.resumed:
        t.add_row("  already done (resumed)", str(summary.resumed))
    if command == "run":  # `classify` rewrites nothing: every record would show as skipped
        for status in ("rewritten", "kept", "skipped"):
            t.add_row(f"  {status}", str(summary.statuses.get(status, 0)))
    t.add_row("  failed", str(summary.failed))
    if command == "run":
        local = engine is not None and engine.has_backend and engine.backend.name == "local"
        model = "the embedded model" if local else "the model"
        t.add_row("rewrites", acceptance_line(summary, model))
    if summary.filter_rules:
        rules = ", ".join(f"{k} {v}" for k, v in summary.filter_rules.most_common())
        t.add_row("filter decisions (responses)", rules)
    if summary.task_types:
        t.add_row("task types (records)", top_counts(summary.task_types, TASK_TYPES_SHOWN))
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

    if args.filter_preset is not None and args.filter_preset not in PRESETS:
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


def check_templates(pack: CriteriaPack, options: RunOptions) -> None:
    """A `realign-text` pack run with --force needs its non-adaptive templates."""
    if options.answer_style != "realign-text" or not options.force:
        return
    wanted = ("rewrite_force_system", "rewrite_force_retrieval_system")
    missing = [k for k in wanted if k not in pack.templates]
    if missing:
        raise die(
            f"--force with a realign-text pack needs the templates "
            f"{', '.join(f'templates/{k}.txt' for k in missing)} (ReAlign's non-adaptive prompts)"
        )


def run_command(args: RunArgs) -> int:
    with usage_errors():
        return _run(args)


def _run(args: RunArgs) -> int:
    from realign.pipeline import record as pipeline
    from realign.pipeline.build import build_runtime, count_json_records
    from realign.pipeline.inputs import check_input
    from realign.pipeline.outputs import check_outputs, corpus_of, job_output

    pack = load_criteria(args)
    args = args.with_pack(pack)
    check_input(args.input)
    check_args(args)
    if args.show_prompt is None:
        # Before the input is read and anything is paid for: a run must be able to save its work.
        output = job_output(args.output, args.output_format, args.fields)
        inputs = [args.input, corpus_of(args.retrieval)]
        check_outputs([output], inputs, store=True, cache=not args.no_cache)
    settings = args.settings(pack)
    reader = open_input(settings.input, settings.input_format, settings.fields, args.max_record_mb)
    options = run_options(args, pack)
    check_templates(pack, options)
    if args.show_prompt is not None:
        from realign.cli.show_prompt import show_prompt

        return show_prompt(settings, pack, options, read_items(reader), args.show_prompt)
    if args.dry_run:
        from realign.pipeline.estimate import estimate_run

        return estimate_run(settings, pack, options, read_items(reader, args.output), err)

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

    def capped(n: int | None) -> int | None:
        return n if n is None or args.limit is None else min(n, args.limit)

    code = run_job(
        job,
        ray if settings.distributed else local,
        total=capped(runtime.total_records),
        late_total=lambda: capped(count_json_records(settings.input)),
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
    summary.output, summary.failures = args.output, fails if failed else None
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
