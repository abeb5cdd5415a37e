"""`realign convert` and `realign stats`: dataset files in, counts and converted files out."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from realign.io.errors import ReadError
    from realign.io.read import RecordReader
    from realign.records import Record

SHOWN_REJECTS = 20  # rejects printed on screen; all of them go to the rejected file
FORMATS_HELP = "items, sharegpt, alpaca, messages or fields"

InputArg = typer.Argument(
    ...,
    help="Input: .json (array), .jsonl, .parquet, hf:NAME[:SPLIT], or a folder saved with "
    "`datasets` (needs the hf extra).",
    show_default=False,
)
OutputArg = typer.Argument(
    ...,
    help="Output file: .json, .jsonl or .parquet (chosen by extension).",
    show_default=False,
)
InputFormatOpt = typer.Option(
    None,
    "--input-format",
    "-f",
    help=f"Input format ({FORMATS_HELP}); detected from the first records when omitted.",
)
FieldsOpt = typer.Option(
    None,
    "--fields",
    help="Read flat records through a mapping, e.g. `instruction=question,response=answer` "
    "(also input=, system=, id=). Implies --input-format fields.",
)
MaxRecordOpt = typer.Option(
    4.0, "--max-record-mb", min=0.001, help="Reject records larger than this (MB of UTF-8 JSON)."
)


def _console() -> Console:
    from realign.cli.console import make_console

    return make_console(highlight=False)


def _say(console: Console, text: str, style: str | None = None) -> None:
    # markup=False: messages hold field paths like items[1].value that rich would eat.
    console.print(text, markup=False, style=style, soft_wrap=True)


def _open_reader(
    console: Console, path: str, input_format: str | None, fields: str | None, max_mb: float
) -> RecordReader:
    from realign.io.formats import FormatError
    from realign.io.read import read_records

    try:
        reader = read_records(path, input_format, fields, max_record_bytes=int(max_mb * 1_000_000))
        _ = reader.format  # detect now, so an unknown format fails before any output
        problem = reader.file_error()  # empty, UTF-16, not a JSON array
    except FormatError as e:
        problem = e
    if problem is not None:
        _say(console, f"error: {problem}", "red")
        raise typer.Exit(2)
    return reader


@contextmanager
def _progress(console: Console, reader: RecordReader) -> Iterator[Any]:
    """A progress bar on a terminal (by bytes or rows); a no-op elsewhere."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[records]} records"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        total = reader.progress()[1]
        task = bar.add_task(f"reading {Path(reader.name).name}", total=total, records=0)

        def tick(n: int) -> None:
            if n % 200 == 0:
                bar.update(task, completed=reader.progress()[0], records=n)

        yield tick


def _reject_line(err: ReadError) -> dict[str, Any]:
    line: dict[str, Any] = {
        "file": err.file,
        "line": err.line,
        "index": err.index,
        "id": err.id,
        "field": err.field,
        "error": err.message,
    }
    if err.record is not None:
        line["record"] = err.record
    elif err.text is not None:
        line["text"] = err.text
    return {k: v for k, v in line.items() if v is not None}


class _Rejects:
    """Prints the first rejects and counts the rest."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.read = 0
        self.write = 0

    def add(self, err: ReadError, *, on_write: bool = False) -> None:
        if on_write:
            self.write += 1
        else:
            self.read += 1
        if self.total <= SHOWN_REJECTS:
            _say(self.console, f"rejected: {err}", "yellow")

    @property
    def total(self) -> int:
        return self.read + self.write


def convert(
    input: str = InputArg,
    output: Path = OutputArg,
    input_format: str | None = InputFormatOpt,
    output_format: str | None = typer.Option(
        None,
        "--output-format",
        "-t",
        help=f"Output format ({FORMATS_HELP}); default: the input's format.",
    ),
    fields: str | None = FieldsOpt,
    output_fields: str | None = typer.Option(
        None,
        "--output-fields",
        help="Mapping for --output-format fields (default: --fields), e.g. "
        "`instruction=prompt,response=completion`.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Stop at the first bad record (exit code 1, no output file)."
    ),
    max_record_mb: float = MaxRecordOpt,
) -> None:
    """Convert a dataset between file types and formats, keeping every field.

    Unknown fields are carried along; realign's metadata stays in the `realign` key. Records that
    cannot be read or written are listed with file:line (id): field and saved, with the reason,
    to `<OUTPUT stem>.rejected.jsonl`; the others go on (unless --strict).

    Examples:

        realign convert data.json data.jsonl

        realign convert data.jsonl data.parquet --output-format sharegpt

        realign convert gsm8k.jsonl gsm8k.json --fields instruction=question,response=answer -t alpaca

    Exit code 0 when done (rejects included), 2 on an unusable input or output path, 1 with
    --strict at the first bad record or when no record could be converted.
    """
    from realign.io.errors import RecordWriteError
    from realign.io.formats import FormatError
    from realign.io.write import JsonlAppender, RecordWriter
    from realign.records import Record

    console = _console()
    if Path(input).resolve() == output.resolve():
        _say(console, f"error: {output}: the output must differ from the input", "red")
        raise typer.Exit(2)
    reader = _open_reader(console, input, input_format, fields, max_record_mb)
    rejected_path = output.with_name(f"{output.stem}.rejected.jsonl")
    rejected_path.unlink(missing_ok=True)  # a stale file from an earlier run would mislead
    rejects = _Rejects(console)
    read = 0
    try:
        writer = RecordWriter(output, output_format, output_fields or fields, source_fields=fields)
    except FormatError as e:
        _say(console, f"error: {e}", "red")
        raise typer.Exit(2) from None

    def reject(err: ReadError, sink: JsonlAppender, *, on_write: bool = False) -> None:
        rejects.add(err, on_write=on_write)
        sink.write(_reject_line(err))
        if strict:
            writer.abort()
            sink.close()
            _say(console, "stopped at the first bad record (--strict); nothing written", "red")
            raise typer.Exit(1)

    with JsonlAppender(rejected_path) as sink, _progress(console, reader) as tick:
        try:
            for n, item in enumerate(reader, start=1):
                tick(n)
                if not isinstance(item, Record):
                    reject(item, sink)
                    continue
                read += 1
                try:
                    writer.write(item)
                except RecordWriteError as e:
                    reject(e.error, sink, on_write=True)
                for err in writer.take_rejected():
                    reject(err, sink, on_write=True)
            writer.close()
            for err in writer.take_rejected():
                reject(err, sink, on_write=True)
        except BaseException:
            writer.abort()
            raise
    fmt_in = reader.format or "?"
    fmt_out = output_format or fmt_in
    _say(
        console,
        f"read {read} records from {input} ({fmt_in}); wrote {writer.written} to {output} "
        f"({fmt_out}); rejected {rejects.total} ({rejects.read} unreadable, "
        f"{rejects.write} unwritable)",
    )
    if rejects.total:
        more = rejects.total - SHOWN_REJECTS
        _say(
            console,
            (f"{more} more rejects not shown; " if more > 0 else "")
            + f"all rejects with reasons: {rejected_path}",
            "yellow",
        )
    if writer.written == 0 and rejects.total:
        raise typer.Exit(1)


# ---------------------------------------------------------------- stats


def _lengths(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
    return {
        "count": len(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
    }


def _domain(url: str) -> str | None:
    host = urlparse(url).hostname
    return host.removeprefix("www.") if host else None


class _Tally:
    """Everything `stats` counts, one record at a time (lengths are kept as ints)."""

    def __init__(self) -> None:
        self.records = 0
        self.turns = 0
        self.single = 0
        self.multi = 0
        self.no_response = 0
        self.empty_response = 0
        self.units = 0
        self.task_types: Counter[str] = Counter()
        self.task_source: Counter[str] = Counter()
        self.with_meta = 0
        self.status: Counter[str] = Counter()
        self.unit_status: Counter[str] = Counter()
        self.with_evidence = 0
        self.evidence = 0
        self.domains: Counter[str] = Counter()
        self.instruction_tokens: list[int] = []
        self.response_tokens: list[int] = []

    def add(self, record: Record) -> None:
        from realign import tokens
        from realign.io.formats import META_KEY
        from realign.records import input_task_type

        self.records += 1
        self.turns += len(record.turns)
        users = sum(t.role == "user" for t in record.turns)
        units = record.assistant_turns()
        if users > 1 or len(units) > 1:
            self.multi += 1
        else:
            self.single += 1
        if not units:
            self.no_response += 1
        elif not record.turns[units[-1]].content.strip():
            self.empty_response += 1
        self.units += len(units)
        by_turn = {u.turn: u for u in record.meta.units}
        for i in units:
            unit = by_turn.get(i)
            if unit is not None and unit.task_type:
                self.task_types[unit.task_type] += 1
                self.task_source["realign"] += 1
            elif (cat := input_task_type(record, i)) is not None:
                self.task_types[cat] += 1
                self.task_source["input"] += 1
            self.instruction_tokens.append(tokens.count(record.instruction_for(i)))
            self.response_tokens.append(tokens.count(record.turns[i].content))
        if META_KEY in record.raw:
            self.with_meta += 1
            self.status[record.meta.status] += 1
            self.unit_status.update(u.status for u in record.meta.units)
        evidence = [e for u in record.meta.units for e in u.evidence]
        if evidence:
            self.with_evidence += 1
            self.evidence += len(evidence)
            self.domains.update(d for e in evidence if (d := _domain(e.url)))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "records": self.records,
            "turns": self.turns,
            "single_turn": self.single,
            "multi_turn": self.multi,
            "units": self.units,
            "no_response": self.no_response,
            "empty_final_response": self.empty_response,
            "task_types": dict(self.task_types.most_common()),
            "task_type_source": dict(self.task_source),
            "units_without_task_type": self.units - sum(self.task_source.values()),
            "tokens": {
                "encoding": "cl100k_base",
                "instruction": _lengths(self.instruction_tokens),
                "response": _lengths(self.response_tokens),
            },
        }
        if self.with_meta:
            out["realign"] = {
                "records_with_metadata": self.with_meta,
                "status": dict(self.status.most_common()),
                "unit_status": dict(self.unit_status.most_common()),
            }
        if self.with_evidence:
            out["evidence"] = {
                "records_with_evidence": self.with_evidence,
                "snippets": self.evidence,
                "top_domains": dict(self.domains.most_common(10)),
            }
        return out


def _print_stats(console: Console, data: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()

    def row(name: str, value: Any) -> None:
        table.add_row(Text(name), Text(str(value)))

    for key in ("input", "format", "records", "rejected", "turns", "single_turn", "multi_turn"):
        row(key.replace("_", " "), data[key])
    row("assistant turns (units)", data["units"])
    row("no assistant turn", data["no_response"])
    row("empty final response", data["empty_final_response"])
    for side in ("instruction", "response"):
        s = data["tokens"][side]
        if s["count"]:
            row(
                f"{side} tokens",
                f"mean {s['mean']}, median {s['median']}, p95 {s['p95']}, max {s['max']}",
            )
    if data["task_types"]:
        src = ", ".join(f"{k} {v}" for k, v in data["task_type_source"].items())
        row("task types", f"({src}; {data['units_without_task_type']} units without)")
        for name, n in data["task_types"].items():
            row(f"  {name}", n)
    else:
        row("task types", "none in the input")
    if "realign" in data:
        meta = data["realign"]
        row("with realign metadata", meta["records_with_metadata"])
        row("status", ", ".join(f"{k} {v}" for k, v in meta["status"].items()))
        row("unit status", ", ".join(f"{k} {v}" for k, v in meta["unit_status"].items()))
    if "evidence" in data:
        ev = data["evidence"]
        row("records with evidence", f"{ev['records_with_evidence']} ({ev['snippets']} snippets)")
        row("top source domains", ", ".join(f"{k} {v}" for k, v in ev["top_domains"].items()))
    console.print(table)


def stats(
    input: str = InputArg,
    input_format: str | None = InputFormatOpt,
    fields: str | None = FieldsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON on stdout."),
    max_record_mb: float = MaxRecordOpt,
) -> None:
    """Count records, turns, task types, statuses and token lengths of a dataset.

    Token lengths use tiktoken's cl100k_base (offline). Task types come from realign's
    metadata when present, else from the input (`category` on the user turn or top level).
    Unreadable records are listed with file:line (id): field and counted as rejected.

    Examples:

        realign stats examples/realign_items.json

        realign stats gsm8k.jsonl --fields instruction=question,response=answer --json
    """
    from realign.records import Record

    console = _console()
    reader = _open_reader(console, input, input_format, fields, max_record_mb)
    rejects = _Rejects(console)
    tally = _Tally()
    with _progress(console, reader) as tick:
        for n, item in enumerate(reader, start=1):
            tick(n)
            if isinstance(item, Record):
                tally.add(item)
            else:
                rejects.add(item)
    data = {"input": input, "format": reader.format, **tally.summary(), "rejected": rejects.total}
    if rejects.total > SHOWN_REJECTS:
        _say(console, f"{rejects.total - SHOWN_REJECTS} more rejects not shown", "yellow")
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        from realign.cli.console import make_console

        _print_stats(make_console(stderr=False, highlight=False), data)
    if tally.records == 0 and rejects.total:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
    app.command("stats")(stats)
