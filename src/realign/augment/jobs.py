"""What `realign rephrase`, `realign generate` and `realign filter` do, kept out of the option
declarations (`realign/cli/augment_cmds.py`). I/O lives here; the augment modules stay pure
functions of their inputs plus engine calls.

Every command works like `realign run`: the same backend resolution, engine (cache, rate
limits, retries, `--max-cost`), progress bar, resume state beside the output, failures file,
and `--dry-run` cost table.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.table import Table

from realign import tokens
from realign.augment import documents as docs_mod
from realign.cli.common import die, lock_output, split_csv
from realign.cli.console import make_console
from realign.cli.progress import make_progress
from realign.llm.engine import Engine
from realign.pipeline.record import failures_path
from realign.pipeline.runner import (
    RunCounts,
    RunStopped,
    fingerprint,
    process_items,
    results,
    write_failures,
)
from realign.pipeline.runtime import EngineArgs, make_engine, pricing_model
from realign.pipeline.state import RunState, state_path
from realign.records import Failure, Record

err = make_console()


@dataclass
class DocArgs(EngineArgs):
    max_chunk_tokens: int = docs_mod.DEFAULT_MAX_CHUNK_TOKENS
    text_field: str | None = None
    id_field: str = "id"


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


@dataclass
class FilterArgs(EngineArgs):
    aspect: str = "educational_value"
    min_score: int = 7
    reference: Path | None = None
    pack: str = "realign"
    criteria: Path | None = None
    input_format: str | None = None
    output_format: str | None = None
    fields: str | None = None


# ---------------------------------------------------------------- engine and run loop


def print_estimate(
    args: EngineArgs, stage: str, requests: int, tokens_in: int, tokens_out: int, what: str
) -> None:
    from realign.llm.pricing import StageEstimate, estimate, render_table

    report = estimate(
        pricing_model(args),
        [
            StageEstimate(
                stage=stage, requests=requests, input_tokens=tokens_in, output_tokens=tokens_out
            )
        ],
    )
    err.print(f"dry run: {what}; no request was sent.")
    err.print(render_table(report))


@dataclass
class Job:
    """One resumable run: where its state lives and what was counted."""

    name: str
    engine: Engine
    closers: list[Callable[[], Any]]
    state: RunState
    counts: RunCounts = field(default_factory=RunCounts)
    started: float = field(default_factory=time.monotonic)
    tally: Counter[str] = field(default_factory=Counter)

    async def aclose(self) -> None:
        for close in self.closers:
            out = close()
            if hasattr(out, "__await__"):
                await out


def open_job(name: str, args: EngineArgs, settings: dict[str, Any]) -> Job:
    """Engine + run state (resumed when the same job ran before and stopped)."""
    if args.output.resolve() == args.input.resolve():
        raise die("the output must not overwrite the input; choose another -o path")
    lock = lock_output(args.output)
    engine, closers = make_engine(args, err)
    backend = engine.backend
    fp = fingerprint(
        name, args.input, {**settings, "model": backend.model, "backend": backend.backend_id}
    )
    state = RunState(state_path(args.output), fp, lock)
    if state.restarted_because:
        err.print(f"[yellow]previous progress discarded: {state.restarted_because}[/]")
    elif state.resumed:
        err.print(f"resuming: {state.count()} items already done")
    return Job(name, engine, closers, state)


def run_job(
    job: Job,
    items: Iterable[Any],
    work: Callable[[Any], Awaitable[BaseModel]],
    *,
    stage: str,
    record_of: Callable[[Any], dict[str, Any]],
    total: int | None,
    limit: int | None = None,
    on_result: Callable[[BaseModel | Failure], None] | None = None,
) -> int | None:
    """Process every item with a progress bar. None when all items are done; else the exit
    code of a clean stop (budget, circuit breaker, Ctrl-C), after saying how to resume."""
    stats = job.engine.stats
    progress = make_progress(err, total)

    def note() -> str:
        parts = [f"{k} {v}" for k, v in job.tally.items()]
        parts.append(f"fail {job.counts.failed}")
        parts.append(f"tok {stats.prompt_tokens + stats.completion_tokens}")
        return " · ".join(parts) + " · " + stats.summary()

    task = progress.add_task(job.name, total=total, note="")

    def done(out: BaseModel | Failure) -> None:
        if on_result is not None:
            on_result(out)
        progress.update(task, advance=1, note=note())

    async def main() -> RunCounts:
        try:
            return await process_items(
                items,
                job.state,
                work,
                stage=stage,
                window=max(4 * job.engine.limit.limit, 16),
                record_of=record_of,
                limit=limit,
                on_done=done,
            )
        finally:
            await job.aclose()

    stopped = ""
    with progress:
        progress.update(task, advance=job.state.count() if job.state.resumed else 0)
        try:
            job.counts = asyncio.run(main())
        except RunStopped as e:
            stopped = str(e)
        except KeyboardInterrupt:
            stopped = "interrupted"
    if stopped:
        saved = job.state.count()
        job.state.close()
        err.print(
            f"[yellow]stopped: {stopped}[/]\n{saved} items are saved; rerun the same command "
            "to resume."
        )
        return 3
    return None


def finish(job: Job, output: Path, extra_failures: Iterable[Failure], table: Table) -> int:
    """Failures file, summary table, state removed; the exit code (1 when anything failed)."""
    fails = failures_path(output)
    extra = list(extra_failures)
    failed = write_failures(job.state, fails, extra)
    unreadable = sum(f.stage == "load" for f in extra) + sum(
        Failure.model_validate_json(p).stage == "load" for p in job.state.iter_payloads(ok=False)
    )
    job.state.close(remove=True)
    stats = job.engine.stats
    table.add_row("failed", str(failed))
    table.add_row("requests", f"{stats.requests} ({stats.cache_hits} from cache)")
    table.add_row("tokens in/out", f"{stats.prompt_tokens} / {stats.completion_tokens}")
    if stats.cost_usd:
        table.add_row("cost", f"${stats.cost_usd:.4f}")
    if stats.retries or stats.rate_limited:
        table.add_row("retries / 429s", f"{stats.retries} / {stats.rate_limited}")
    table.add_row("time", f"{time.monotonic() - job.started:.1f}s")
    table.add_row("output", str(output))
    err.print(table)
    if failed:
        from realign.cli.run_impl import failed_note

        err.print(failed_note(failed, unreadable, fails, "item(s)"))
        return 1
    fails.unlink(missing_ok=True)
    return 0


def _atomic_jsonl(path: Path, lines: Iterable[dict[str, Any]]) -> int:
    tmp = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


# ---------------------------------------------------------------- documents


def chunk_stream(args: DocArgs) -> Iterator[docs_mod.Chunk | docs_mod.DocumentError]:
    """The input's chunks (and unusable documents), only the first `--limit` of them."""
    try:
        docs = docs_mod.read_documents(
            args.input, text_field=args.text_field, id_field=args.id_field
        )
        stream = docs_mod.iter_chunks(docs, args.max_chunk_tokens)
        yield from islice(stream, args.limit) if args.limit else stream
    except docs_mod.DocumentsError as e:
        raise die(str(e)) from e


def check_doc_args(args: DocArgs) -> None:
    if not args.input.exists():
        raise die(f"{args.input}: no such file or folder")
    if args.max_chunk_tokens < 32:
        raise die(f"--max-chunk-tokens {args.max_chunk_tokens}: use at least 32")


def count_chunks(args: DocArgs) -> tuple[int, int]:
    """(chunks, unusable documents) of the input, for the progress bar; names the unusable."""
    c = e = 0
    for item in chunk_stream(args):
        if isinstance(item, docs_mod.DocumentError):
            err.print(f"[red]not usable:[/] {item}")
            e += 1
        else:
            c += 1
    return c, e


def _chunk_record(item: Any) -> dict[str, Any]:
    return item.chunk.model_dump()


# ---------------------------------------------------------------- rephrase


def rephrase_command(args: RephraseArgs) -> int:
    from realign.augment import rephrase as rp
    from realign.criteria import CriteriaError, load_pack

    check_doc_args(args)
    if args.output.suffix.lower() != ".jsonl":
        raise die(f"{args.output}: rephrase writes JSON Lines; name the output *.jsonl")
    try:
        pack = load_pack(args.pack, args.criteria)
    except CriteriaError as e:
        raise die(f"criteria: {e}") from e
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
        req = tin = tout = chunks = 0
        for c in chunk_stream(args):
            if isinstance(c, docs_mod.DocumentError):
                continue
            chunks += 1
            for s in styles:
                r = rp.build_request(c, pack[s])
                req += 1
                tin += sum(tokens.count(m.content) for m in r.messages) + 40  # + schema
                tout += int(1.3 * c.tokens) + 20
        print_estimate(
            args,
            "rephrase",
            req,
            tin,
            tout,
            f"{chunks} chunks × {len(styles)} styles from {args.input}",
        )
        return 0

    n_chunks, n_bad = count_chunks(args)
    settings = {
        "styles": styles,
        "max_chunk_tokens": args.max_chunk_tokens,
        "limit": args.limit,
        "text_field": args.text_field,
        "id_field": args.id_field,
        "criteria": {s: pack[s].content_hash for s in styles},
    }
    job = open_job("rephrase", args, settings)

    def tally(out: BaseModel | Failure) -> None:
        if isinstance(out, rp.Rephrasing):
            job.tally[out.style] += 1

    async def work(item: rp.RephraseItem) -> BaseModel:
        return await rp.rephrase(job.engine, item, pack[item.style])

    code = run_job(
        job,
        rp.work_items(chunk_stream(args), styles),
        work,
        stage="rephrase",
        record_of=_chunk_record,
        total=n_chunks * len(styles) + n_bad,
        on_result=tally,
    )
    if code is not None:
        return code

    def synthetic() -> Iterator[dict[str, Any]]:
        for r in results(job.state, rp.Rephrasing):
            yield rp.synthetic_line(r, args.source_text)

    def real() -> Iterator[dict[str, Any]]:
        for c in chunk_stream(args):
            if isinstance(c, docs_mod.Chunk):
                yield rp.real_line(c)

    n_syn = job.state.count(ok=True)
    if ratio is None:
        written = _atomic_jsonl(args.output, synthetic())
    else:
        written = _atomic_jsonl(args.output, rp.mix(real, synthetic, (n_chunks, n_syn), ratio))
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
    from realign.criteria import CriteriaError, load_pack
    from realign.io.errors import RecordWriteError
    from realign.io.formats import FORMAT_NAMES, FormatError
    from realign.io.write import JsonlAppender, RecordWriter

    check_doc_args(args)
    if args.output_format not in FORMAT_NAMES or args.output_format == "fields":
        raise die(
            f"--output-format {args.output_format!r}: use items, sharegpt, alpaca or messages"
        )
    if not 0.0 < args.dedup_threshold <= 1.0:
        raise die(f"--dedup-threshold {args.dedup_threshold}: use a number in (0, 1]")
    pack = None
    if args.typed:
        try:
            pack = load_pack(args.pack, args.criteria)
        except CriteriaError as e:
            raise die(f"criteria: {e}") from e
    n = args.per_chunk

    if args.dry_run:
        req = tin = tout = chunks = 0
        schema = gen.pairs_schema(tuple(pack.names()) if pack else None)
        schema_tokens = tokens.count(json.dumps(schema.model_json_schema()))
        for c in chunk_stream(args):
            if isinstance(c, docs_mod.DocumentError):
                continue
            chunks += 1
            r = gen.build_request(c, n, pack)
            req += 1
            tin += sum(tokens.count(m.content) for m in r.messages) + schema_tokens
            tout += min(gen.output_budget(n), n * 150)
        print_estimate(
            args, "generate", req, tin, tout, f"{chunks} chunks × {n} pairs from {args.input}"
        )
        return 0

    n_chunks, n_bad = count_chunks(args)
    settings = {
        "per_chunk": n,
        "max_chunk_tokens": args.max_chunk_tokens,
        "limit": args.limit,
        "text_field": args.text_field,
        "id_field": args.id_field,
        "pack": pack.content_hash if pack else None,
    }
    job = open_job("generate", args, settings)

    def tally(out: BaseModel | Failure) -> None:
        if isinstance(out, gen.GeneratedChunk):
            job.tally["pairs"] += len(out.pairs)

    async def work(item: gen.GenerateItem) -> BaseModel:
        return await gen.generate(job.engine, item, n, pack)

    code = run_job(
        job,
        gen.work_items(chunk_stream(args)),
        work,
        stage="generate",
        record_of=_chunk_record,
        total=n_chunks + n_bad,
        on_result=tally,
    )
    if code is not None:
        return code

    prov = gen.provenance(job.engine.backend.model, job.engine.backend.name, pack)
    dup_path = args.output.with_name(f"{args.output.stem}.duplicates.jsonl")
    dup_path.unlink(missing_ok=True)  # never leave a stale one from an earlier run
    write_fails: list[Failure] = []
    kept = dups = short = 0
    types: Counter[str] = Counter()

    def rejected(errors: Iterable[Any]) -> None:
        write_fails.extend(e.as_failure("write") for e in errors)

    try:
        with (
            RecordWriter(args.output, args.output_format) as writer,
            JsonlAppender(dup_path) as dup_file,
        ):
            last_chunk = None
            for chunk_result, k, dup in gen.deduplicated(
                results(job.state, gen.GeneratedChunk), args.dedup_threshold
            ):
                if chunk_result.id != last_chunk:
                    last_chunk = chunk_result.id
                    short += max(0, chunk_result.asked - len(chunk_result.pairs))
                if dup is not None:
                    dup_file.write(dup.model_dump(mode="json"))
                    dups += 1
                    continue
                record = gen.to_record(chunk_result, k, kept, args.output_format, prov)
                try:
                    writer.write(record)
                    kept += 1
                    types[chunk_result.pairs[k].task_type or "(untyped)"] += 1
                except RecordWriteError as e:
                    rejected([e.error])
                rejected(writer.take_rejected())
        rejected(writer.take_rejected())
    except FormatError as e:
        raise die(str(e)) from e

    table = Table(title="realign generate", show_header=False, box=None)
    table.add_row("chunks", str(n_chunks))
    table.add_row(
        "pairs generated",
        f"{kept + dups} ({n} asked per chunk"
        + (f"; {short} fewer than asked" if short else "")
        + ")",
    )
    table.add_row("near-duplicates removed", f"{dups}" + (f" → {dup_path}" if dups else ""))
    table.add_row("pairs written", str(kept))
    if pack is not None:
        table.add_row("task types", ", ".join(f"{k} {v}" for k, v in types.most_common(10)))
    return finish(job, args.output, write_fails, table)


# ---------------------------------------------------------------- filter


def filter_command(args: FilterArgs) -> int:
    from realign import judge
    from realign.augment import quality_filter as qf
    from realign.cli.run_impl import open_input, read_items
    from realign.criteria import CriteriaError, load_pack
    from realign.io.errors import RecordWriteError
    from realign.io.formats import FormatError
    from realign.io.write import RecordWriter

    if not args.input.exists() and not str(args.input).startswith("hf:"):
        raise die(f"{args.input}: no such file")
    try:
        aspects = judge.parse_aspects(args.aspect)
    except ValueError as e:
        raise die(f"--aspect: {e}") from e
    if not 1 <= args.min_score <= 10:
        raise die(f"--min-score {args.min_score}: scores run from 1 to 10")
    pack = None
    if "alignment" in aspects:
        try:
            pack = load_pack(args.pack, args.criteria)
        except CriteriaError as e:
            raise die(f"criteria: {e}") from e
    refs = None
    if args.reference is not None:
        refs = judge.ReferenceIndex(_references(args.reference, args))

    reader = open_input(args.input, args.input_format, args.fields)

    def items() -> Iterator[Record | Failure]:
        try:
            yield from read_items(args, reader)
        except FormatError as e:
            raise die(str(e)) from e

    if args.dry_run:
        req = tin = tout = records = 0
        schema_tokens = tokens.count(json.dumps(judge.PointwiseOutput.model_json_schema()))
        for rec in islice(items(), args.limit):
            records += 1
            if isinstance(rec, Failure):
                continue
            for u in judge.units_of(rec):
                for a in aspects:
                    r = judge.pointwise_request(u, a, pack=pack, reference=None)
                    req += 1
                    tin += sum(tokens.count(m.content) for m in r.messages) + schema_tokens
                    tout += qf.ESTIMATED_OUTPUT_TOKENS
        print_estimate(
            args,
            "judge",
            req,
            tin,
            tout,
            f"{records} records × {len(aspects)} aspect(s) from {args.input}",
        )
        return 0

    from realign.pipeline.runtime import count_records

    total = count_records(args.input)
    if total is not None and args.limit:
        total = min(total, args.limit)
    settings = {
        "aspects": aspects,
        "min_score": args.min_score,
        "limit": args.limit,
        "pack": pack.content_hash if pack else None,
        "input_format": args.input_format,
        "output_format": args.output_format,
        "fields": args.fields,
        "reference": str(args.reference) if args.reference else None,
    }
    job = open_job("filter", args, settings)

    def tally(out: BaseModel | Failure) -> None:
        if isinstance(out, qf.Filtered):
            job.tally["kept" if out.verdict.kept else "dropped"] += 1

    async def work(rec: Record) -> BaseModel:
        return await qf.score_record(
            job.engine, rec, aspects, args.min_score, pack=pack, references=refs
        )

    code = run_job(
        job,
        items(),
        work,
        stage="judge",
        record_of=lambda r: r.raw,
        total=total,
        limit=args.limit,
        on_result=tally,
    )
    if code is not None:
        return code

    dropped_path = args.output.with_name(f"{args.output.stem}.dropped.jsonl")
    per_type: dict[str, Counter[str]] = {}
    write_fails: list[Failure] = []

    def rejected(errors: Iterable[Any]) -> None:
        write_fails.extend(e.as_failure("write") for e in errors)

    try:
        with (
            RecordWriter(args.output, args.output_format, source_fields=args.fields) as kept_w,
            RecordWriter(dropped_path, args.output_format, source_fields=args.fields) as drop_w,
        ):
            for f in results(job.state, qf.Filtered):
                writer = kept_w if f.verdict.kept else drop_w
                try:
                    writer.write(f.record)
                    per_type.setdefault(f.task_type, Counter())[
                        "kept" if f.verdict.kept else "dropped"
                    ] += 1
                except RecordWriteError as e:
                    rejected([e.error])
                rejected(kept_w.take_rejected())
                rejected(drop_w.take_rejected())
        rejected(kept_w.take_rejected())
        rejected(drop_w.take_rejected())
    except FormatError as e:
        raise die(str(e)) from e

    table = Table(title=f"realign filter: {', '.join(aspects)} ≥ {args.min_score}")
    table.add_column("task type")
    table.add_column("kept", justify="right")
    table.add_column("dropped", justify="right")
    for tt, c in sorted(per_type.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        table.add_row(tt, str(c["kept"]), str(c["dropped"]))
    kept_n = sum(c["kept"] for c in per_type.values())
    dropped_n = sum(c["dropped"] for c in per_type.values())
    table.add_row("[bold]total", f"[bold]{kept_n}", f"[bold]{dropped_n}")
    err.print(table)
    summary = Table(show_header=False, box=None)
    summary.add_row("dropped records", f"{dropped_n} → {dropped_path} (with scores and rationales)")
    return finish(job, args.output, write_fails, summary)


def _references(path: Path, args: FilterArgs) -> Iterator[Record]:
    """Reference answers for `--aspect factuality`; unreadable ones are named and skipped."""
    from realign.io.formats import FormatError
    from realign.io.read import read_records

    try:
        for item in read_records(path, args.input_format, args.fields):
            if isinstance(item, Record):
                yield item
            else:
                err.print(f"[yellow]reference not usable:[/] {item}")
    except FormatError as e:
        raise die(f"--reference: {e}") from e
