"""Write records to `.json` / `.jsonl` / `.parquet`, atomically, keeping the input's format
unless told otherwise; `JsonlAppender` for side outputs (rejects, failures)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from realign.io.compress import (
    MissingExtra,
    check_compression,
    compressed_text,
    compression,
    data_type,
)
from realign.io.emit import from_record
from realign.io.errors import Label, RecordWriteError, WriteError
from realign.io.formats import FORMAT_NAMES, FieldMap, FormatError, RecordError
from realign.io.objects import ANY_SURROGATE, find_surrogate
from realign.io.parquet import ParquetSink
from realign.records import Record
from realign.values import NonFiniteError, json_text, readable

WRITE_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".parquet")
TEXT_EXTENSIONS = (".json", ".jsonl", ".ndjson")  # these may be compressed (`compress.py`)


def output_type(path: Path) -> str | None:
    """The type an output path is written as (`.jsonl` for `out.jsonl.gz`); None when realign
    cannot write it."""
    ext = data_type(path)
    if compression(path) is not None:
        return ext if ext in TEXT_EXTENSIONS else None
    return ext if ext in WRITE_EXTENSIONS else None


def check_writable(
    path: Path, output_format: str | None = None, fields: FieldMap | str | None = None
) -> None:
    """`FormatError` unless a `RecordWriter(path, output_format, fields)` could be made: what a
    command checks before it starts, so a run never pays for results it cannot write."""
    if output_format is not None and output_format not in FORMAT_NAMES:
        raise FormatError(
            f"unknown --output-format '{output_format}'; use one of {', '.join(FORMAT_NAMES)}"
        )
    if output_format == "fields" and not fields:
        raise FormatError(
            "--output-format fields needs --output-fields instruction=KEY,response=KEY"
        )
    if isinstance(fields, str):
        FieldMap.parse(fields)  # a bad mapping says what is wrong with it
    if output_type(path) is None:
        ext = path.suffix.lower()
        what = f"unknown output type '{ext}'" if ext else "no file type (extension)"
        raise FormatError(
            f"{path}: {what}; use {', '.join(WRITE_EXTENSIONS)} (text ones may end in .gz or .zst)"
        )
    try:
        check_compression(path)  # a .zst output needs the zstd extra
    except MissingExtra as e:
        raise FormatError(f"{path}: {e}") from None


class _TextSink:
    def __init__(self, tmp: Path, array: bool, name: Path) -> None:
        self.f = compressed_text(tmp, name)
        self.array = array
        self.n = 0
        if array:
            self.f.write("[")

    def add(self, obj: dict[str, Any], label: Label) -> list[WriteError]:
        try:
            text = json_text(obj)  # bytes, dates, decimals by the JSON rule; NaN fails here
        except NonFiniteError as e:
            raise RecordError(e.field, str(e)) from None
        text.encode("utf-8")  # lone surrogates fail here, before anything is written
        if self.array:
            self.f.write(("," if self.n else "") + "\n" + text)
        else:
            self.f.write(text + "\n")
        self.n += 1
        return []

    def close(self) -> list[WriteError]:
        if self.array:
            self.f.write("\n]\n" if self.n else "]\n")
        self.f.close()
        return []

    def abort(self) -> None:
        self.f.close()


class RecordWriter:
    """Writes records to `.json` / `.jsonl` / `.parquet`, atomically (renamed on success).

    `output_format` None keeps each record's own format. `keep_types_of` names the input: when
    it is a Parquet file, a Parquet output keeps its columns' types (binary, timestamps, maps). `write` raises `RecordWriteError` for a
    record the format cannot hold; Parquet finds type clashes a batch at a time, so those
    arrive in `take_rejected()` (call it after `write` and after `close`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        output_format: str | None = None,
        fields: FieldMap | str | None = None,
        source_fields: FieldMap | str | None = None,
        *,
        parquet_batch_rows: int = 1000,
        parquet_batch_bytes: int = 64 * 1024 * 1024,
        keep_types_of: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        check_writable(self.path, output_format, fields)
        self.output_format = output_format
        self.fields = FieldMap.parse(fields) if isinstance(fields, str) else fields
        self.source_fields = (
            FieldMap.parse(source_fields) if isinstance(source_fields, str) else source_fields
        )
        ext = output_type(self.path)  # not None: `check_writable` said so
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink: _TextSink | ParquetSink = (
            ParquetSink(
                self._tmp, str(path), parquet_batch_rows, parquet_batch_bytes, like=keep_types_of
            )
            if ext == ".parquet"
            else _TextSink(self._tmp, array=ext == ".json", name=self.path)
        )
        self._rejected: list[WriteError] = []
        self._closed = False

    def write(self, record: Record) -> None:
        label = (record.index, record.id)
        try:
            obj = from_record(record, self.output_format, self.fields, self.source_fields)
            self._rejected += self._sink.add(obj, label)
        except (RecordError, TypeError, ValueError, UnicodeEncodeError) as e:
            field = getattr(e, "field", None)
            message = getattr(e, "message", None) or str(e)
            if isinstance(e, UnicodeEncodeError):
                bad = find_surrogate(record.raw, ANY_SURROGATE)
                field, message = bad and bad[0], "a lone surrogate cannot be written as UTF-8"
            raise RecordWriteError(
                WriteError(
                    file=str(self.path),
                    index=record.index,
                    id=record.id,
                    field=field,
                    message=message,
                    record=record.raw,
                )
            ) from None

    def take_rejected(self) -> list[WriteError]:
        out, self._rejected = self._rejected, []
        return out

    @property
    def written(self) -> int:
        return self._sink.n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._rejected += self._sink.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink.abort()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class JsonlAppender:
    """A plain JSON Lines file for side outputs (rejects, failures), created on first write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._f: IO[str] | None = None
        self.n = 0

    def write(self, obj: dict[str, Any]) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # backslashreplace: undecodable input bytes come out as JSON \\udcXX escapes.
            self._f = self.path.open("w", encoding="utf-8", errors="backslashreplace")
        self._f.write(json.dumps(readable(obj), ensure_ascii=False) + "\n")
        self.n += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
