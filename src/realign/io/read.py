"""Open an input as a stream: a `.json` / `.jsonl` / `.parquet` file or a Hugging Face dataset.

`read_objects` yields `(index, line, object | ReadError)`; `read_records` turns the objects
into `Record`s (auto-detecting the format). Memory stays flat: `jsonstream` reads text files
incrementally, `parquet` by batches, `hf` streams datasets.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from realign.io.compress import MissingExtra, check_compression, compression, data_type
from realign.io.detect import DETECT_SAMPLE, detect_format
from realign.io.errors import ReadError
from realign.io.formats import FORMAT_NAMES, FieldMap, FormatError, RecordError, to_record
from realign.io.hf import is_hf_source, open_hf
from realign.io.jsonstream import json_gen, jsonl_gen
from realign.io.objects import DEFAULT_MAX_RECORD_BYTES, ObjectStream, label_id
from realign.io.parquet import parquet_gen
from realign.records import Record

READ_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".parquet")
# Text files may be compressed: `.jsonl.gz`, `.json.gz`, `.jsonl.zst`, ... (see `compress.py`).
COMPRESSED = ".gz/.zst"


def read_objects(
    path: str | os.PathLike[str], *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> ObjectStream:
    """Open an input; iterate it for `(index, line, object | ReadError)`."""
    spec = str(path)
    if is_hf_source(spec):
        return open_hf(spec, max_record_bytes)
    p = Path(spec)
    if p.is_dir():
        raise FormatError(
            f"{spec}: is a folder; pass a dataset file ({', '.join(READ_EXTENSIONS)}) or a "
            "folder saved with datasets' save_to_disk"
        )
    if p.exists() and not p.is_file():
        raise FormatError(f"{spec}: not a regular file (a pipe or a device); pass a dataset file")
    if not p.is_file():
        raise FormatError(f"{spec}: no such file")
    ext = data_type(p)
    if compression(p) is not None and ext not in (".jsonl", ".ndjson", ".json"):
        raise FormatError(
            f"{spec}: compressed '{ext or p.suffix}' files are not read; compress .jsonl or "
            f".json files ({COMPRESSED}), or give the Parquet file as it is"
        )
    try:
        check_compression(p)
    except MissingExtra as e:
        raise FormatError(f"{spec}: {e}") from None
    size = None if compression(p) else p.stat().st_size  # progress counts decompressed bytes
    if ext in (".jsonl", ".ndjson"):
        return ObjectStream(spec, jsonl_gen(p), size, "bytes", max_record_bytes)
    if ext == ".json":
        return ObjectStream(spec, json_gen(p), size, "bytes", max_record_bytes)
    if ext == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(p).metadata.num_rows
        except Exception as e:  # pyarrow raises several types for a bad file
            raise FormatError(f"{spec}: not a readable Parquet file ({e})") from None
        return ObjectStream(spec, parquet_gen(p), rows, "rows", max_record_bytes)
    raise FormatError(
        f"{spec}: unknown file type '{ext}'; use {', '.join(READ_EXTENSIONS)} (text ones may "
        f"be compressed: {COMPRESSED}), hf:NAME[:SPLIT] or a folder saved with datasets"
    )


# ---------------------------------------------------------------- records


class RecordReader:
    """Iterates `Record | ReadError` over an input; `.format` is the detected format."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        input_format: str | None = None,
        fields: FieldMap | str | None = None,
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        if input_format is not None and input_format not in FORMAT_NAMES:
            raise FormatError(
                f"unknown --input-format '{input_format}'; use one of {', '.join(FORMAT_NAMES)}"
            )
        self.fields = FieldMap.parse(fields) if isinstance(fields, str) else fields
        if input_format not in (None, "fields") and self.fields is not None:
            raise FormatError(f"--fields only applies to --input-format fields, not {input_format}")
        self.stream = read_objects(path, max_record_bytes=max_record_bytes)
        self.name = self.stream.name
        self._input_format = input_format
        self._format: str | None = None
        self._detected = False
        self._items = iter(self.stream)
        self._buffer: list[tuple[int, int | None, dict[str, Any] | ReadError]] = []

    @property
    def format(self) -> str | None:
        """The input's format (detected from the first records); None if no record was read."""
        self._detect()
        return self._format

    def file_error(self) -> ReadError | None:
        """The error that makes the whole input unreadable (empty, UTF-16, not a JSON array),
        found before any record is handed out, so a command can stop before doing any work."""
        self._detect()
        if not self._buffer:
            self._buffer.extend(itertools.islice(self._items, 1))
        first = self._buffer[0][2] if self._buffer else None
        return first if isinstance(first, ReadError) and first.index is None else None

    def progress(self) -> tuple[int, int | None]:
        return self.stream.progress()

    @property
    def notes(self) -> list[str]:
        """What the reader decided that the user should know (e.g. a .jsonl read as .json)."""
        return self.stream.notes

    def _detect(self) -> None:
        if self._detected:
            return
        self._detected = True
        if self._input_format or self.fields:
            self._format = self._input_format or "fields"
            if self._format == "fields" and self.fields is None:
                raise FormatError(
                    f"{self.name}: --input-format fields needs --fields instruction=KEY,response=KEY"
                )
            return
        objs: list[dict[str, Any]] = []
        for item in self._items:
            self._buffer.append(item)
            if isinstance(item[2], dict):
                objs.append(item[2])
            if len(objs) >= DETECT_SAMPLE or len(self._buffer) >= 10 * DETECT_SAMPLE:
                break
        if objs:
            try:
                self._format = detect_format(objs)
            except FormatError as e:
                raise FormatError(f"{self.name}: {e}") from None

    def __iter__(self) -> Iterator[Record | ReadError]:
        self._detect()
        items = self._buffer
        self._buffer = []
        for index, line, obj in _chain(items, self._items):
            if isinstance(obj, ReadError):
                yield obj
                continue
            rid = label_id(obj)
            if self._format is None:
                yield ReadError(
                    file=self.name,
                    line=line,
                    index=index,
                    id=rid,
                    record=obj,
                    message="cannot tell the format (no readable record at the start); "
                    "pass --input-format",
                )
                continue
            try:
                yield to_record(obj, index, self._format, self.fields)
            except RecordError as e:
                yield ReadError(
                    file=self.name,
                    line=line,
                    index=index,
                    id=rid,
                    field=e.field,
                    message=e.message,
                    record=obj,
                )


def _chain(
    first: list[tuple[int, int | None, Any]], rest: Iterator[tuple[int, int | None, Any]]
) -> Iterator[tuple[int, int | None, Any]]:
    yield from first
    yield from rest


def read_records(
    path: str | os.PathLike[str],
    input_format: str | None = None,
    fields: FieldMap | str | None = None,
    *,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> RecordReader:
    """Records of an input file (or HF dataset), as `Record` or `ReadError`, in input order."""
    return RecordReader(path, input_format, fields, max_record_bytes=max_record_bytes)
