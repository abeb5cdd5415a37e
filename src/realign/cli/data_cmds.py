"""`realign convert` and `realign stats`: dataset files in, counts and converted files out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from realign.io.errors import ReadError
    from realign.io.read import RecordReader

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
    "(also input=, system=, id=, task_type=; a key may be a path such as instances.0.output). "
    "Implies --input-format fields.",
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
    """The input's reader, through the one input check every command shares."""
    from realign.errors import UsageError
    from realign.pipeline.inputs import open_input

    try:
        return open_input(Path(path), input_format, fields, max_mb)
    except UsageError as e:
        _say(console, f"error: {e}", "red")
        raise typer.Exit(2) from None


def _check_output(
    console: Console, output: Path, fmt: str | None, fields: str | None, rejected: Path, input: str
) -> None:
    """The one output check every command shares (`pipeline/outputs.py`), before any work."""
    from realign.errors import UsageError
    from realign.pipeline.outputs import Output, check_outputs

    try:
        check_outputs([Output(output, None, "output", (rejected,), False, fmt, fields)], [input])
    except UsageError as e:
        _say(console, f"error: {e}", "red")
        raise typer.Exit(2) from None


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

        realign convert gsm8k.jsonl gsm8k.json -t alpaca \\
            --fields instruction=question,response=answer

    Exit code (as `realign run`'s): 0 when every record was converted, 1 when any was rejected
    (the others are still written) or with --strict at the first bad record, 2 on an unusable
    input, output path or option (nothing is written).
    """
    from realign.io.compress import side_path
    from realign.io.errors import RecordWriteError
    from realign.io.formats import FormatError
    from realign.io.write import JsonlAppender, RecordWriter
    from realign.records import Record

    console = _console()
    reader = _open_reader(console, input, input_format, fields, max_record_mb)
    rejected_path = side_path(output, "rejected")
    _check_output(console, output, output_format, output_fields or fields, rejected_path, input)
    rejected_path.unlink(missing_ok=True)  # a stale file from an earlier run would mislead
    rejects = _Rejects(console)
    read = 0
    try:
        writer = RecordWriter(
            output, output_format, output_fields or fields, source_fields=fields, keep_types_of=input
        )
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
    if rejects.total:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    from realign.cli.stats_cmds import stats

    app.command("convert")(convert)
    app.command("stats")(stats)
