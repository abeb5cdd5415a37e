"""Opening a dataset input for a command: the one check that it exists (a file, `hf:NAME`, or
a `datasets.save_to_disk` folder, optionally `DIR:SPLIT`), its reader, and its items.

What makes the whole input unusable (no such file, a folder, an unknown file type or format,
empty, UTF-16, not a JSON array) is a `UsageError` here, before any work or run state."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from realign.errors import UsageError
from realign.io.hf import is_hf_source
from realign.io.objects import DEFAULT_MAX_RECORD_BYTES
from realign.io.read import RecordReader
from realign.records import Failure, Record

DEFAULT_MAX_RECORD_MB = DEFAULT_MAX_RECORD_BYTES / 1_000_000


def check_input(path: Path) -> None:
    """A `UsageError` unless `path` is a file or folder, or a Hugging Face source."""
    if not path.exists() and not is_hf_source(path):
        raise UsageError(f"{path}: no such file")
    if path.exists() and not (path.is_file() or path.is_dir()):  # a FIFO, /dev/null, a socket
        raise UsageError(f"{path}: not a regular file (a pipe or a device); pass a dataset file")


def open_input(
    path: Path,
    input_format: str | None,
    fields: str | None,
    max_record_mb: float = DEFAULT_MAX_RECORD_MB,
) -> RecordReader:
    """The input's reader, its format detected and the whole file checked."""
    from realign.io.formats import FormatError
    from realign.io.read import read_records

    check_input(path)
    fmt = input_format or ("fields" if fields else None)
    try:
        reader = read_records(
            path, input_format=fmt, fields=fields, max_record_bytes=int(max_record_mb * 1_000_000)
        )
        _ = reader.format  # detect now: an unknown format fails before any work
        problem = reader.file_error()
    except FormatError as e:
        raise UsageError(str(e)) from None
    if problem is not None:
        raise UsageError(str(problem))
    for note in reader.notes:
        print(f"note: {note}", file=sys.stderr)
    return reader


def read_items(reader: RecordReader, output: Path | None = None) -> Iterator[Record | Failure]:
    """Records from the input; unreadable ones become `load` failures (never dropped).

    With a JSON / JSON Lines `output`, a record holding NaN or Infinity (which JSON cannot
    hold) is a `load` failure here, before anything is paid for it, instead of at the end.
    """
    from realign.io.formats import FormatError
    from realign.io.write import TEXT_EXTENSIONS, output_type

    text_output = output is not None and output_type(output) in TEXT_EXTENSIONS
    try:
        for item in reader:
            if isinstance(item, Record):
                yield _not_for_json(item, reader.name, output) if text_output else item
            elif item.index is None:  # not a record's error: `open_input` stops on these first
                raise UsageError(str(item))
            else:  # a read error: it names the file, line/record and field
                yield item.as_failure("load")
    except FormatError as e:
        raise UsageError(str(e)) from None


def _not_for_json(record: Record, name: str, output: Path | None) -> Record | Failure:
    from realign.io.errors import ReadError
    from realign.values import find_non_finite, non_finite_token

    bad = find_non_finite(record.raw)
    if bad is None:
        return record
    field, value = bad
    return ReadError(
        file=name,
        index=record.index,
        id=record.id,
        field=field,
        message=f"{non_finite_token(value)} cannot be written to {output}: JSON has no NaN or "
        "Infinity (write .parquet to keep it, or replace it in the input)",
        record=record.raw,
    ).as_failure("load")


def read_dataset(
    path: Path, input_format: str | None, fields: str | None, limit: int | None = None
) -> tuple[list[Record], list[str]]:
    """All records of a dataset (the first `limit`) and the read errors, each naming file,
    record and field (`judge`, `report`: they need the whole dataset in memory)."""
    return read_all(open_input(path, input_format, fields), limit)


def read_all(reader: RecordReader, limit: int | None = None) -> tuple[list[Record], list[str]]:
    """`read_dataset` of an input already opened (and so checked)."""
    records: list[Record] = []
    errors: list[str] = []
    for item in read_items(reader):
        if isinstance(item, Record):
            records.append(item)
            if limit is not None and len(records) >= limit:
                break
        else:
            errors.append(item.error)
    return records, errors
