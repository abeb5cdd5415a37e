"""Opening a dataset input for a command: the one check that it exists (a file, `hf:NAME`, or
a `datasets.save_to_disk` folder, optionally `DIR:SPLIT`), its reader, and its items.

What makes the whole input unusable (no such file, a folder, an unknown file type or format,
empty, UTF-16, not a JSON array) is a `UsageError` here, before any work or run state."""

from __future__ import annotations

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
    return reader


def read_items(reader: RecordReader) -> Iterator[Record | Failure]:
    """Records from the input; unreadable ones become `load` failures (never dropped)."""
    from realign.io.formats import FormatError

    try:
        for item in reader:
            if isinstance(item, Record):
                yield item
            elif item.index is None:  # not a record's error: `open_input` stops on these first
                raise UsageError(str(item))
            else:  # a read error: it names the file, line/record and field
                yield item.as_failure("load")
    except FormatError as e:
        raise UsageError(str(e)) from None


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
