"""What `realign filter` does: score each record with the pointwise judge, keep those that
reach `--min-score` (`realign.augment.quality_filter`), under the CLI's one job runner."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from pydantic import BaseModel
from rich.table import Table

from realign.cli.augment_run import (
    EngineArgs,
    check_job_outputs,
    err,
    items_job,
    load_pack_or_die,
    open_augment_job,
    print_estimate,
)
from realign.cli.common import die
from realign.cli.job import finish
from realign.errors import UsageError
from realign.io.compress import side_path
from realign.pipeline.inputs import open_input, read_items
from realign.pipeline.outputs import job_output
from realign.records import Failure, Record


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


def filter_command(args: FilterArgs) -> int:
    from realign import judge
    from realign.augment import quality_filter as qf
    from realign.augment.jobs import estimate_filter, write_filtered
    from realign.pipeline.build import count_json_records, count_records

    reader = open_input(args.input, args.input_format, args.fields)
    dropped_path = side_path(args.output, "dropped")
    kept = job_output(args.output, args.output_format, args.fields, side_files=[dropped_path])
    check_job_outputs(args, kept, inputs=(args.reference,) if args.reference else ())
    try:
        aspects = judge.parse_aspects(args.aspect)
    except ValueError as e:
        raise die(f"--aspect: {e}") from e
    if not 1 <= args.min_score <= 10:
        raise die(f"--min-score {args.min_score}: scores run from 1 to 10")
    pack = load_pack_or_die(args.pack, args.criteria) if "alignment" in aspects else None
    refs = None
    if args.reference is not None:
        refs = judge.ReferenceIndex(_references(args.reference, args))

    if args.dry_run:
        est = estimate_filter(islice(read_items(reader), args.limit), aspects, pack)
        what = f"{est.inputs} records × {len(aspects)} aspect(s) from {args.input}"
        return print_estimate(args, "judge", est, what, records=True)

    def capped(n: int | None) -> int | None:
        return n if n is None or not args.limit else min(n, args.limit)

    total = capped(count_records(args.input))
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
    job = open_augment_job("filter", args, settings)
    engine = job.engine
    assert engine is not None

    def tally(out: BaseModel | Failure) -> None:
        if isinstance(out, qf.Filtered):
            job.tally["kept" if out.verdict.kept else "dropped"] += 1

    async def work(rec: Record) -> BaseModel:
        return await qf.score_record(
            engine, rec, aspects, args.min_score, pack=pack, references=refs
        )

    code = items_job(
        job,
        read_items(reader),
        work,
        stage="judge",
        record_of=lambda r: r.raw,
        total=total,
        limit=args.limit,
        on_result=tally,
        late_total=lambda: capped(count_json_records(args.input)),
    )
    if code is not None:
        return code

    out = write_filtered(job.state, args.output, dropped_path, args.output_format, args.fields)
    table = Table(title=f"realign filter: {', '.join(aspects)} ≥ {args.min_score}")
    table.add_column("task type")
    table.add_column("kept", justify="right")
    table.add_column("dropped", justify="right")
    for tt, c in sorted(out.per_type.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        table.add_row(tt, str(c["kept"]), str(c["dropped"]))
    table.add_row("[bold]total", f"[bold]{out.kept}", f"[bold]{out.dropped}")
    err.print(table)
    summary = Table(show_header=False, box=None)
    summary.add_row(
        "dropped records", f"{out.dropped} → {dropped_path} (with scores and rationales)"
    )
    return finish(job, args.output, out.failures, summary)


def _references(path: Path, args: FilterArgs) -> Iterator[Record]:
    """Reference answers for `--aspect factuality`; unreadable ones are named and skipped."""
    try:
        for item in read_items(open_input(path, args.input_format, args.fields)):
            if isinstance(item, Record):
                yield item
            else:
                err.print(f"[yellow]reference not usable:[/] {item.error}")
    except UsageError as e:
        raise die(f"--reference: {e}") from e
