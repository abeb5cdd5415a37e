"""What `realign rephrase`, `realign generate` and `realign filter` do, kept out of the option
declarations (`augment_cmds.py`). Every command works like `realign run`: the same engine
(backend, cache, rate limits, retries, `--max-cost`), job runner (progress, resume state
beside the output, clean stops), failures file and `--dry-run` cost table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.table import Table

from realign.augment import documents as docs_mod
from realign.augment.jobs import ChunkSource, Estimate, chunk_record
from realign.cli.common import die, lock_output, split_csv
from realign.cli.console import make_console
from realign.cli.job import Job, open_job
from realign.cli.options import EngineArgs
from realign.io.compress import side_path
from realign.llm.build import build_engine, pricing_model
from realign.pipeline.outputs import JSONL_TYPES, Output, check_outputs, job_output
from realign.pipeline.runner import fingerprint
from realign.records import Failure

err = make_console()


@dataclass
class DocArgs(EngineArgs):
    max_chunk_tokens: int = docs_mod.DEFAULT_MAX_CHUNK_TOKENS
    text_field: str | None = None
    id_field: str = "id"

    def source(self) -> ChunkSource:
        return ChunkSource(
            self.input, self.max_chunk_tokens, self.text_field, self.id_field, self.limit
        )


@dataclass
class RephraseArgs(DocArgs):
    styles: str = "easy,medium,hard,qa"
    mix: str | None = None
    pack: str = "wrap"
    criteria: Path | None = None
    source_text: bool = True


@dataclass
class GenerateArgs(DocArgs):
    per_chunk: int = 3
    typed: bool = False
    pack: str = "realign"
    criteria: Path | None = None
    output_format: str = "items"
    dedup_threshold: float = 0.8


def print_estimate(
    args: EngineArgs, stage: str, est: Estimate, what: str, records: bool = False
) -> int:
    """The dry run's cost table and what the run could not use; the run's exit status.
    `records`: the inputs are records (each usable or not), not documents cut into chunks."""
    from realign.llm.pricing import StageEstimate, estimate, render_table

    report = estimate(
        pricing_model(args.engine_options()),
        [
            StageEstimate(
                stage=stage,
                requests=est.requests,
                input_tokens=est.tokens_in,
                output_tokens=est.tokens_out,
            )
        ],
    )
    err.print(f"dry run: {what}; no request was sent.")
    err.print(render_table(report))
    if records:
        return est.unreadable.report(err, est.inputs + est.unreadable.count, "records")
    return est.unreadable.report(err, None, "document(s)")


def check_job_outputs(args: EngineArgs, *outputs: Output, inputs: tuple[Path, ...] = ()) -> None:
    """Everything the job will write, and the store, before it reads its input in full or
    pays for anything (`pipeline/outputs.py`)."""
    check_outputs(outputs, [args.input, *inputs], store=True, cache=not args.no_cache)


def open_augment_job(name: str, args: EngineArgs, settings: dict[str, Any]) -> Job:
    """Engine + run state (resumed when the same job ran before and stopped)."""
    lock = lock_output(args.output)  # before anything is paid for
    built = build_engine(args.engine_options(), stderr=err.file)
    backend = built.engine.backend
    fp = fingerprint(
        name, args.input, {**settings, "model": backend.model, "backend": backend.backend_id}
    )
    return open_job(
        name,
        args.output,
        fp,
        err,
        lock=lock,
        engine=built.engine,
        closers=built.closers,
        what="items",
    )


def note_of(job: Job) -> Callable[[], str]:
    """The progress note: the command's tallies, failures, tokens and the engine's summary."""

    def note() -> str:
        assert job.engine is not None
        stats = job.engine.stats
        parts = [f"{k} {v}" for k, v in job.tally.items()]
        parts.append(f"fail {job.failed}")
        parts.append(f"tok {stats.prompt_tokens + stats.completion_tokens}")
        return " · ".join(parts) + " · " + stats.summary()

    return note


def load_pack_or_die(name: str, criteria: Path | None) -> Any:
    from realign.criteria import CriteriaError, load_pack

    try:
        return load_pack(name, criteria)
    except CriteriaError as e:
        raise die(f"criteria: {e}") from e


def items_job(
    job: Job,
    items: Any,
    work: Callable[[Any], Any],
    *,
    stage: str,
    record_of: Callable[[Any], dict[str, Any]],
    total: int | None,
    limit: int | None = None,
    on_result: Callable[[BaseModel | Failure], None] | None = None,
    late_total: Callable[[], int | None] | None = None,
) -> int | None:
    """Every item through `work` under the job runner; None when all are done, else the exit
    code of a clean stop. `late_total`: see `run_job`."""
    from realign.cli.job import run_job
    from realign.pipeline.runner import process_items

    assert job.engine is not None
    window = max(4 * int(job.engine.limit.limit), 16)

    async def run(done: Callable[[Any], None]) -> None:
        await process_items(
            items,
            job.state,
            work,
            stage=stage,
            window=window,
            record_of=record_of,
            limit=limit,
            on_done=done,
        )

    return run_job(
        job, run, total=total, note=note_of(job), on_done=on_result, late_total=late_total
    )


# ---------------------------------------------------------------- rephrase


def rephrase_command(args: RephraseArgs) -> int:
    from realign.augment import rephrase as rp
    from realign.augment.jobs import estimate_rephrase, write_rephrased
    from realign.cli.job import finish

    source = args.source()
    source.check()
    check_job_outputs(args, job_output(args.output, types=JSONL_TYPES))  # JSON Lines only
    pack = load_pack_or_die(args.pack, args.criteria)
    styles = split_csv(args.styles)
    unknown = [s for s in styles if s not in pack]
    if not styles or unknown:
        raise die(
            f"--styles: unknown style(s) {', '.join(unknown) or '(none given)'}; pack "
            f"'{pack.name}' has {', '.join(pack.names())}"
        )
    styles = list(dict.fromkeys(styles))
    try:
        ratio = rp.parse_ratio(args.mix) if args.mix else None
    except ValueError as e:
        raise die(f"--mix: {e}") from e

    if args.dry_run:
        est = estimate_rephrase(source, pack, styles)
        what = f"{est.inputs} chunks × {len(styles)} styles from {args.input}"
        return print_estimate(args, "rephrase", est, what)

    n_chunks, n_bad = source.count(lambda d: err.print(f"[red]not usable:[/] {d}"))
    settings = {
        "styles": styles,
        "max_chunk_tokens": args.max_chunk_tokens,
        "limit": args.limit,
        "text_field": args.text_field,
        "id_field": args.id_field,
        "criteria": {s: pack[s].content_hash for s in styles},
    }
    job = open_augment_job("rephrase", args, settings)
    engine = job.engine
    assert engine is not None

    def tally(out: BaseModel | Failure) -> None:
        if isinstance(out, rp.Rephrasing):
            job.tally[out.style] += 1

    async def work(item: rp.RephraseItem) -> BaseModel:
        return await rp.rephrase(engine, item, pack[item.style])

    code = items_job(
        job,
        rp.work_items(source.chunks(), styles),
        work,
        stage="rephrase",
        record_of=chunk_record,
        total=n_chunks * len(styles) + n_bad,
        on_result=tally,
    )
    if code is not None:
        return code
    n_syn = job.state.count(ok=True)
    written = write_rephrased(
        job.state,
        source,
        args.output,
        source_text=args.source_text,
        ratio=ratio,
        n_chunks=n_chunks,
    )
    table = Table(title="realign rephrase", show_header=False, box=None)
    table.add_row("chunks", f"{n_chunks} (≤ {args.max_chunk_tokens} tokens each)")
    table.add_row("rephrasings", f"{n_syn} ({', '.join(f'{k} {v}' for k, v in job.tally.items())})")
    if ratio is not None:
        table.add_row(
            "mixed corpus",
            f"{written} lines, real:synthetic {ratio[0]}:{ratio[1]} "
            f"(the shorter side repeats; repeated lines carry `repeat`)",
        )
    else:
        table.add_row("lines written", str(written))
    return finish(job, args.output, [], table)


# ---------------------------------------------------------------- generate


def generate_command(args: GenerateArgs) -> int:
    from realign.augment import generate as gen
    from realign.augment.jobs import estimate_generate, write_generated
    from realign.cli.job import finish
    from realign.io.formats import FORMAT_NAMES

    source = args.source()
    source.check()
    if args.output_format not in FORMAT_NAMES or args.output_format == "fields":
        raise die(
            f"--output-format {args.output_format!r}: use items, sharegpt, alpaca or messages"
        )
    if not 0.0 < args.dedup_threshold <= 1.0:
        raise die(f"--dedup-threshold {args.dedup_threshold}: use a number in (0, 1]")
    dup_path = side_path(args.output, "duplicates")
    check_job_outputs(args, job_output(args.output, args.output_format, side_files=[dup_path]))
    pack = load_pack_or_die(args.pack, args.criteria) if args.typed else None
    n = args.per_chunk

    if args.dry_run:
        est = estimate_generate(source, n, pack)
        what = f"{est.inputs} chunks × {n} pairs from {args.input}"
        return print_estimate(args, "generate", est, what)

    n_chunks, n_bad = source.count(lambda d: err.print(f"[red]not usable:[/] {d}"))
    settings = {
        "per_chunk": n,
        "max_chunk_tokens": args.max_chunk_tokens,
        "limit": args.limit,
        "text_field": args.text_field,
        "id_field": args.id_field,
        "pack": pack.content_hash if pack else None,
    }
    job = open_augment_job("generate", args, settings)
    engine = job.engine
    assert engine is not None

    def tally(out: BaseModel | Failure) -> None:
        if isinstance(out, gen.GeneratedChunk):
            job.tally["pairs"] += len(out.pairs)

    async def work(item: gen.GenerateItem) -> BaseModel:
        return await gen.generate(engine, item, n, pack)

    code = items_job(
        job,
        gen.work_items(source.chunks()),
        work,
        stage="generate",
        record_of=chunk_record,
        total=n_chunks + n_bad,
        on_result=tally,
    )
    if code is not None:
        return code

    prov = gen.provenance(engine.backend.model, engine.backend.name, pack)
    out = write_generated(
        job.state, args.output, dup_path, args.output_format, args.dedup_threshold, prov
    )
    table = Table(title="realign generate", show_header=False, box=None)
    table.add_row("chunks", str(n_chunks))
    table.add_row(
        "pairs generated",
        f"{out.kept + out.dropped} ({n} asked per chunk"
        + (f"; {out.short} fewer than asked" if out.short else "")
        + ")",
    )
    dups = out.dropped
    table.add_row("near-duplicates removed", f"{dups}" + (f" → {dup_path}" if dups else ""))
    table.add_row("pairs written", str(out.kept))
    if pack is not None:
        table.add_row("task types", ", ".join(f"{k} {v}" for k, v in out.types.most_common(10)))
    return finish(job, args.output, out.failures, table)
