"""Read and write dataset files as streams: `.json`, `.jsonl`, `.parquet`, Hugging Face datasets.

Reading yields `(position, object_or_ReadError)`: a bad record (malformed JSON, wrong type,
bytes that are not UTF-8, a lone surrogate, nested over `MAX_DEPTH`, over the size limit)
becomes a `ReadError` naming the file, the line or record and the field, with the record's
text when it could not be kept as an object, and the records after it still come. Memory
stays flat:

- `.jsonl` is read line by line.
- `.json` (an array) is parsed incrementally, one element at a time. After a JSON syntax
  error the reader finds the record's end by its brackets (or the next line starting a
  record) and goes on; only a record left open to the end of the file takes the rest with it.
  A `.json` file that starts with `{` is read as a sequence of objects (JSON Lines content).
- `.parquet` is read by batches. Writing spools rows to a temporary JSON Lines file while
  growing one schema over all records, then writes row groups, so a key that first appears
  late still gets its column; a record whose types clash with earlier ones (a string where
  there were numbers) is rejected with the field named. Parquet cannot tell a missing key from
  a null, so nulls read back as missing keys, and a field holding both integers and floats
  reads back as floats. The `realign` metadata is stored as a JSON text column, so its
  free-form shape never clashes with the schema.
- `hf:NAME[:SPLIT]` (or `hf:NAME:CONFIG:SPLIT`) streams a Hub dataset, and a directory saved
  with `datasets.save_to_disk` (optionally `DIR:SPLIT`) is read from disk; both need the `hf`
  extra. Hugging Face datasets are input only: write `.parquet` for them.

`read_records` turns objects into `Record`s (auto-detecting the format) and `RecordWriter`
writes records back, keeping the input's format unless told otherwise.
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pydantic import BaseModel

from realign.io.formats import (
    DETECT_SAMPLE,
    FORMAT_NAMES,
    META_KEY,
    FieldMap,
    FormatError,
    RecordError,
    detect_format,
    from_record,
    to_record,
)
from realign.records import Failure, Record

# ~1M tokens, beyond any model's context. Decimal MB, like --max-record-mb and the messages.
DEFAULT_MAX_RECORD_BYTES = 4_000_000
# Deeper records are rejected: real conversations nest a handful of levels, and past a few
# hundred the JSON parsers (Python's and pydantic's) and the recursive walks fail.
MAX_DEPTH = 100
READ_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".parquet")
WRITE_EXTENSIONS = (".json", ".jsonl", ".ndjson", ".parquet")
_JSON_COLUMNS_KEY = b"realign.json_columns"
_SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of non-UTF-8 bytes
_ANY_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: maybe a lone surrogate
_CHUNK = 1 << 16
_NON_BLANK = re.compile(r"\S")


class ReadError(BaseModel):
    """A record that could not be read (or, as `WriteError`, written).

    `index` is None when the error concerns the file as a whole (empty, UTF-16, not a JSON
    array); then there are no records to go on with.
    """

    file: str
    line: int | None = None  # 1-based line in a text file
    index: int | None = None  # 0-based position of the record in the input
    id: str | None = None
    field: str | None = None
    message: str
    record: dict[str, Any] | None = None  # the parsed object, when there was one
    text: str | None = None  # the start of the text that could not be parsed

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        elif self.index is not None:
            where += f" record {self.index}"
        if self.id is not None:
            where += f" (id {self.id})"
        return where

    def __str__(self) -> str:
        return f"{self.location()}: {self.field + ': ' if self.field else ''}{self.message}"

    def as_failure(self, stage: str) -> Failure:
        """The line this error becomes in a `<OUTPUT stem>.failures.jsonl` file."""
        return Failure(
            id=str(self.id if self.id is not None else self.index),
            index=self.index if self.index is not None else -1,
            stage=stage,
            error=str(self),
            raw_output=self.text,
            record=self.record or {},
        )


class WriteError(ReadError):
    """A record the output file cannot hold (e.g. a new key in a Parquet file)."""


class RecordWriteError(RecordError):
    """Raised by `RecordWriter.write`; carries the `WriteError` to report."""

    def __init__(self, error: WriteError) -> None:
        super().__init__(error.field, error.message)
        self.error = error


# ---------------------------------------------------------------- helpers


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _walk_strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_strings(v, f"{path}[{i}]")


def _largest_field(obj: Any) -> tuple[str | None, int]:
    best: tuple[str | None, int] = (None, 0)
    for path, s in _walk_strings(obj):
        if len(s) > best[1]:
            best = (path, len(s))
    return best


def _find_surrogate(
    obj: Any, pattern: re.Pattern[str] = _SURROGATE, path: str = ""
) -> tuple[str, str] | None:
    """The path of the first string (or key) holding a surrogate, and that surrogate."""
    if isinstance(obj, str):
        m = pattern.search(obj)
        return (path, m.group()) if m else None
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for k, v in items:
        if isinstance(k, str) and (m := pattern.search(k)):
            return (f"{path}.{_printable(k)}" if path else _printable(k)) + " (key)", m.group()
        sub = f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k))
        if (bad := _find_surrogate(v, pattern, sub)) is not None:
            return bad
    return None


def surrogate_field(obj: Any) -> str | None:
    """The path of the first string (or key) of `obj` holding a surrogate, which no UTF-8
    file or SQLite text can store; None when there is none."""
    bad = _find_surrogate(obj, _ANY_SURROGATE)
    return None if bad is None else bad[0]


def _printable(text: str) -> str:
    """`text` as valid UTF-8: undecodable input bytes become `\\xNN`, other surrogates
    `\\udNNN`, so failure lines and messages can always be written."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _depth(obj: Any) -> int:
    """How deeply `obj` nests (iterative: a deep record must not exhaust the stack here)."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(obj, 1)]
    while todo:
        node, d = todo.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, d)
            if deepest > MAX_DEPTH:
                break
            values = node.values() if isinstance(node, dict) else node
            todo.extend((v, d + 1) for v in values if isinstance(v, dict | list))
    return deepest


def _approx_size(obj: Any) -> int:
    return sum(len(s) for _, s in _walk_strings(obj)) + 16


def _strip_nulls(obj: Any) -> Any:
    """Parquet/Arrow fill missing struct keys with null; read them back as missing."""
    if isinstance(obj, dict):
        return {k: _strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_strip_nulls(v) for v in obj]
    return obj


def _mb(n: int) -> str:
    """Decimal units, like --max-record-mb: 4.0 MB is 4,000,000 bytes."""
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


# ---------------------------------------------------------------- object streams


class ObjectStream:
    """Iterates `(index, line, object | ReadError)` over one input; `progress()` for a bar."""

    def __init__(
        self,
        name: str,
        gen: Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]],
        total: int | None,
        unit: str,
        max_record_bytes: int,
    ) -> None:
        self.name = name
        self.total = total
        self.unit = unit  # "bytes" or "rows"
        self.done = 0
        self.max_record_bytes = max_record_bytes
        self._gen = gen

    def __iter__(self) -> Iterator[tuple[int, int | None, dict[str, Any] | ReadError]]:
        for index, line, obj in self._gen(self):
            yield index, line, self._check(index, line, obj)

    def progress(self) -> tuple[int, int | None]:
        return self.done, self.total

    def error(self, message: str, **kw: Any) -> ReadError:
        return ReadError(file=self.name, message=message, **kw)

    def _check(self, index: int, line: int | None, item: Any) -> dict[str, Any] | ReadError:
        obj, size, text = (
            (item.obj, item.size, item.text) if isinstance(item, _Text) else (item, None, None)
        )
        if isinstance(obj, ReadError):
            return obj
        if not isinstance(obj, dict):
            return self.error(
                f"expected a JSON object, got {_type_name(obj)}",
                line=line,
                index=index,
                text=None if text is None else _printable(text),
            )
        rid = obj.get("id")
        rid = None if rid is None or isinstance(rid, dict | list) else str(rid)
        # A record failing these checks cannot be held by the failures file as an object
        # (pydantic and SQLite refuse it), so its failure line carries the input text.
        if (text is None or text.count("{") + text.count("[") > MAX_DEPTH) and _depth(
            obj
        ) > MAX_DEPTH:
            return self.error(
                f"nested more than {MAX_DEPTH} levels deep",
                line=line,
                index=index,
                id=rid,
                text=None if text is None else _printable(text),
            )
        if text is not None and (problem := _surrogate_problem(obj, text, item.suspect)):
            return self.error(
                problem[1],
                line=line,
                index=index,
                id=None if rid is None else _printable(rid),
                field=problem[0],
                text=_printable(text),
            )
        if size is None:  # no source text: count the characters of the strings
            size = _approx_size(obj)
        if size > self.max_record_bytes // 4:  # a cheap bound first: a char is at most 4 bytes
            size = len(json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogateescape"))
            if size > self.max_record_bytes:
                field, n = _largest_field(obj)
                return self.error(
                    f"record is {_mb(size)}, over the {_mb(self.max_record_bytes)} limit "
                    f"(largest field {_mb(n)}; raise --max-record-mb to accept it)",
                    line=line,
                    index=index,
                    id=rid,
                    field=field,
                    record=obj,
                )
        return obj


@dataclass(frozen=True)
class _Text:
    """A value parsed from `text`: its length in bytes, whether it held undecodable bytes."""

    obj: Any
    size: int
    suspect: bool
    text: str


def _surrogate_problem(obj: Any, text: str, undecodable: bool) -> tuple[str, str] | None:
    """(field, message) when a string of `obj` holds undecodable bytes or a lone surrogate.

    Neither can be written as UTF-8 (nor stored by the run state), so the record fails here,
    named, instead of crashing the run when its result is saved.
    """
    if undecodable and (bad := _find_surrogate(obj)) is not None:
        return bad[0], "not valid UTF-8 (undecodable bytes; shown as \\xNN in the text)"
    if (
        "\\u" in text  # cheap first: most records hold no escape at all
        and _ESCAPED_SURROGATE.search(text)
        and (bad := _find_surrogate(obj, _ANY_SURROGATE))
    ):
        code = f"\\u{ord(bad[1]):04x}"
        return bad[0], (
            f"lone surrogate {code} (half of a UTF-16 pair) is not text and cannot be written "
            "as UTF-8; fix or remove it in the input"
        )
    return None


def _check_bom(head: bytes) -> str | None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or head[:4] in (
        codecs.BOM_UTF32_LE,
        codecs.BOM_UTF32_BE,
    ):
        return "file is UTF-16/UTF-32 encoded; realign reads UTF-8 (re-save it as UTF-8)"
    return None


def _jsonl_gen(path: Path) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        index = 0
        seen_text = False
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                s.done += len(raw)
                if lineno == 1:
                    if (msg := _check_bom(raw)) is not None:
                        yield 0, 1, s.error(msg, line=1)
                        return
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                if not raw.strip():
                    continue
                seen_text = True
                try:
                    text, suspect = raw.decode("utf-8"), False
                except UnicodeDecodeError:
                    text, suspect = raw.decode("utf-8", "surrogateescape"), True
                text = text.rstrip("\r\n")
                try:
                    obj = _Text(json.loads(text), len(raw), suspect, text)
                except (json.JSONDecodeError, RecursionError) as e:
                    obj = s.error(
                        f"malformed JSON: {e.msg} (column {e.colno})"
                        if isinstance(e, json.JSONDecodeError)
                        else f"nested more than {MAX_DEPTH} levels deep",
                        line=lineno,
                        index=index,
                        text=_printable(text),
                    )
                yield index, lineno, obj
                index += 1
        if not seen_text:
            yield 0, None, s.error("file is empty: no records")

    return gen


class _TextBuffer:
    """A growing window over a UTF-8 file for incremental `raw_decode`, tracking lines."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None]) -> None:
        self.f = f
        self.on_read = on_read
        self.dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.pos = 0
        self.line = 1
        self.column = 0  # of pos, in characters
        self.eof = False

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(max(_CHUNK, len(self.buf) - self.pos))  # doubles for big records
        self.on_read(len(data))
        self.eof = not data
        self.buf = self.buf[self.pos :] + self.dec.decode(data, final=self.eof)
        self.pos = 0
        return not self.eof

    def advance(self, to: int) -> None:
        newlines = self.buf.count("\n", self.pos, to)
        if newlines:
            self.line += newlines
            self.column = to - self.buf.rfind("\n", self.pos, to) - 1
        else:
            self.column += to - self.pos
        self.pos = to

    def peek(self) -> str:
        """The next non-blank character ('' at the end), consuming the blanks."""
        while True:
            m = _NON_BLANK.search(self.buf, self.pos)
            if m:
                self.advance(m.start())
                return m.group()
            self.advance(len(self.buf))
            if not self.more():
                return ""


_OUTSIDE = re.compile(r'["{}\[\],\n]')
_INSIDE = re.compile(r'["\\\n]')
_OPENER = {"}": "{", "]": "["}
_INDENT = re.compile(r"[ \t\r]*")


def _skip_record(tb: _TextBuffer, limit: int) -> tuple[str, bool]:
    """Move past a record that did not parse; return its text and whether its end was found.

    Strings and brackets are tracked from the record's start, so the record ends where its
    brackets close: at the `,` or `]` after it, or where the next record opens when the comma
    is missing. A raw newline ends a string (JSON strings cannot hold one: the quote was left
    open), and a closer that matches no open bracket closes the record. When brackets stay
    open, a line starting with `{` no further right than the record's own `{` starts the
    next record (records of a .json file are laid out alike: one a line, or indented).
    The end is not found at the end of the file, or after `limit` characters.
    """
    stack: list[str] = []
    in_str = False
    closed = tb.buf[tb.pos] not in "{["  # a bare token: it ends at the next , or ]
    column = tb.column
    off = 0  # scan position, from tb.pos (more() moves the window, not the offset)
    while True:
        m = (_INSIDE if in_str else _OUTSIDE).search(tb.buf, tb.pos + off)
        if m is None or (m.group() == "\\" and m.end() >= len(tb.buf)):
            # read on (an escape needs the character after it)
            off = (len(tb.buf) if m is None else m.start()) - tb.pos
            if off > limit or not tb.more():
                text = tb.buf[tb.pos : tb.pos + 200]
                tb.advance(len(tb.buf))
                return text, False
            continue
        c, at = m.group(), m.start()
        off = m.end() - tb.pos
        if c == "\n":
            in_str = False
            indent = _INDENT.match(tb.buf, m.end())
            assert indent is not None
            if indent.end() >= len(tb.buf) and not tb.eof:  # read the next line first
                off = at - tb.pos
                if off > limit:
                    return tb.buf[tb.pos : tb.pos + 200], False
                tb.more()
                continue
            if (
                (stack or closed)
                and tb.buf.startswith("{", indent.end())
                and indent.end() - m.end() <= column
            ):
                at = indent.end()
                break
            continue
        if in_str:
            if c == "\\":
                off += 1
            else:
                in_str = False
            continue
        if c == '"':
            in_str = True
        elif c in "{[":
            if closed and not stack:  # the next record, after a missing comma
                break
            stack.append(c)
        elif c in "}]":
            if not stack and c == "]":  # the end of the array (at the end of the file), or stray
                nxt = _NON_BLANK.search(tb.buf, m.end())
                if nxt is None and not tb.eof:
                    off = at - tb.pos
                    if off > limit:
                        return tb.buf[tb.pos : tb.pos + 200], False
                    tb.more()
                    continue
                if nxt is None:
                    break
                continue
            while stack and stack.pop() != _OPENER[c]:
                pass
            closed = closed or not stack
        elif not stack:  # a comma between records
            break
    at = max(at, tb.pos + 1)  # a stray ',' or ']' is skipped itself: the reader moves on
    text = tb.buf[tb.pos : at].rstrip()
    tb.advance(at)
    return text, True


def _json_gen(path: Path) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    decoder = json.JSONDecoder()

    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        with path.open("rb") as f:
            head = f.read(4)
            if (msg := _check_bom(head)) is not None:
                yield 0, 1, s.error(msg, line=1)
                return
            f.seek(len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0)

            def on_read(n: int) -> None:
                s.done += n

            tb = _TextBuffer(f, on_read)
            first = tb.peek()
            if first == "":
                yield 0, None, s.error("file is empty: no records")
                return
            if first not in "[{":
                yield (
                    0,
                    tb.line,
                    s.error(f"expected a JSON array of records, found {first!r}", line=tb.line),
                )
                return
            array = first == "["
            if array:
                tb.advance(tb.pos + 1)
            index = 0
            lost = False  # a record that did not parse ran to the end of the file
            while True:
                c = tb.peek()
                if array and c == "]":  # also after a trailing comma: nothing is lost
                    tb.advance(tb.pos + 1)
                    if tb.peek() != "":
                        text = tb.buf[tb.pos : tb.pos + 200]
                        yield (
                            index,
                            tb.line,
                            s.error(
                                "unexpected text after the closing ']'",
                                line=tb.line,
                                index=index,
                                text=_printable(text),
                            ),
                        )
                    return
                if c == "":
                    if array and not lost:  # records may be missing: a truncated file
                        yield (
                            index,
                            tb.line,
                            s.error(
                                "malformed JSON: the array is not closed with ']' "
                                "(is the file truncated?)",
                                line=tb.line,
                                index=index,
                            ),
                        )
                    return
                start_line = tb.line
                while True:
                    try:
                        obj, end = decoder.raw_decode(tb.buf, tb.pos)
                    except json.JSONDecodeError as e:
                        # At the window's edge the record may just be incomplete: read on.
                        truncated = e.pos >= len(tb.buf) - 6 or e.msg.startswith("Unterminated")
                        if truncated and tb.more():
                            continue
                        line = start_line + tb.buf.count("\n", tb.pos, e.pos)
                        err, lost = _skipped(s, tb, index, line, f"malformed JSON: {e.msg}")
                        yield index, line, err
                        break
                    except RecursionError:
                        problem = f"nested more than {MAX_DEPTH} levels deep"
                        err, lost = _skipped(s, tb, index, start_line, problem)
                        yield index, start_line, err
                        break
                    if end < len(tb.buf) or tb.eof or not tb.more():
                        suspect = _SURROGATE.search(tb.buf, tb.pos, end) is not None
                        text = tb.buf[tb.pos : end]
                        tb.advance(end)
                        yield index, start_line, _Text(obj, len(text), suspect, text)
                        break  # complete (a bare number at the edge might have continued)
                index += 1
                if array and tb.peek() == ",":
                    tb.advance(tb.pos + 1)
                # Anything else (`]`, the next record after a missing comma, stray text) is
                # handled at the top of the loop: stray text becomes a failed record.

    return gen


def _skipped(
    s: ObjectStream, tb: _TextBuffer, index: int, line: int, problem: str
) -> tuple[ReadError, bool]:
    """The error for a record that did not parse, once the reader has moved past it, and
    whether the rest of the file was lost with it."""
    text, found = _skip_record(tb, s.max_record_bytes)
    if not found and not tb.eof:
        problem += f"; no end of the record within {_mb(s.max_record_bytes)}"
    if not found:
        problem += "; the rest of this .json file could not be read"
    else:
        problem += "; reading goes on with the next record"
    return s.error(problem, line=line, index=index, text=_printable(text)), not found


def _parquet_gen(path: Path) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata or {}
        json_cols = set(json.loads(meta.get(_JSON_COLUMNS_KEY, b"[]")))
        index = 0
        batches = pf.iter_batches(batch_size=64)
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:  # a corrupt page: pyarrow raises several types
                yield (
                    index,
                    None,
                    s.error(f"the rest of this Parquet file is unreadable ({e})", index=index),
                )
                return
            if batch is None:
                return
            for row in batch.to_pylist():
                obj = _strip_nulls(row)
                for col in json_cols & obj.keys():
                    try:
                        obj[col] = json.loads(obj[col])
                    except (TypeError, json.JSONDecodeError) as e:
                        obj = s.error(f"column holds invalid JSON: {e}", index=index, field=col)
                        break
                yield index, None, obj
                index += 1
                s.done += 1

    return gen


def _hf_gen(dataset: Any) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        for index, row in enumerate(dataset):
            s.done += 1
            yield index, None, _strip_nulls(dict(row))

    return gen


_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def _split_hf_dir(spec: str) -> tuple[Path, str | None] | None:
    """`DIR` or `DIR:SPLIT` when DIR was saved with `datasets.save_to_disk`."""
    candidates: list[tuple[str, str | None]] = [(spec, None)]
    if ":" in spec:
        folder, split = spec.rsplit(":", 1)
        candidates.append((folder, split))
    for folder, split in candidates:
        p = Path(folder)
        if p.is_dir() and any((p / n).exists() for n in _HF_MARKERS):
            return p, split
    return None


def is_hf_source(spec: str | os.PathLike[str]) -> bool:
    s = str(spec)
    return s.startswith("hf:") or _split_hf_dir(s) is not None


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise FormatError(
            "reading a Hugging Face dataset needs the `hf` extra: pip install 'realign[hf]'"
        ) from None
    return datasets


def _open_hf(spec: str, max_record_bytes: int) -> ObjectStream:
    datasets = _import_datasets()
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        name, config, split = parts[0], None, "train"
        if len(parts) == 2:
            split = parts[1]
        elif len(parts) == 3:
            config, split = parts[1], parts[2]
        elif len(parts) > 3:
            raise FormatError(f"{spec}: use hf:NAME[:SPLIT] or hf:NAME:CONFIG:SPLIT")
        try:
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as e:  # offline, unknown name, bad split: many types
            raise FormatError(
                f"{spec}: cannot open the Hugging Face dataset ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}). Check the name "
                "and the network, or save it with datasets' save_to_disk and pass the folder"
            ) from None
        return ObjectStream(spec, _hf_gen(ds), None, "rows", max_record_bytes)
    found = _split_hf_dir(spec)
    assert found is not None
    folder, split = found
    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None:
            split = "train" if "train" in splits else (splits[0] if len(splits) == 1 else None)
        if split not in splits:
            raise FormatError(
                f"{spec}: choose a split as {folder}:SPLIT, one of {', '.join(splits)}"
            )
        ds = ds[split]
    return ObjectStream(spec, _hf_gen(ds), len(ds), "rows", max_record_bytes)


def read_objects(
    path: str | os.PathLike[str], *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> ObjectStream:
    """Open an input; iterate it for `(index, line, object | ReadError)`."""
    spec = str(path)
    if is_hf_source(spec):
        return _open_hf(spec, max_record_bytes)
    p = Path(spec)
    if p.is_dir():
        raise FormatError(
            f"{spec}: is a folder; pass a dataset file ({', '.join(READ_EXTENSIONS)}) or a "
            "folder saved with datasets' save_to_disk"
        )
    if not p.is_file():
        raise FormatError(f"{spec}: no such file")
    ext = p.suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        return ObjectStream(spec, _jsonl_gen(p), p.stat().st_size, "bytes", max_record_bytes)
    if ext == ".json":
        return ObjectStream(spec, _json_gen(p), p.stat().st_size, "bytes", max_record_bytes)
    if ext == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(p).metadata.num_rows
        except Exception as e:  # pyarrow raises several types for a bad file
            raise FormatError(f"{spec}: not a readable Parquet file ({e})") from None
        return ObjectStream(spec, _parquet_gen(p), rows, "rows", max_record_bytes)
    raise FormatError(
        f"{spec}: unknown file type '{ext}'; use {', '.join(READ_EXTENSIONS)}, "
        "hf:NAME[:SPLIT] or a folder saved with datasets"
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
            rid = obj.get("id")
            rid = None if rid is None or isinstance(rid, dict | list) else str(rid)
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


# ---------------------------------------------------------------- writing


Label = tuple[int | None, str | None]  # (index, id) of the record, for error messages


def _encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


class _TextSink:
    def __init__(self, tmp: Path, array: bool) -> None:
        self.f = tmp.open("w", encoding="utf-8", newline="\n")
        self.array = array
        self.n = 0
        if array:
            self.f.write("[")

    def add(self, obj: dict[str, Any], label: Label) -> list[WriteError]:
        text = _encode(obj)
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


def _empty_object(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, dict):
        if not obj and path:
            return path
        for k, v in obj.items():
            if (bad := _empty_object(v, f"{path}.{k}" if path else str(k))) is not None:
                return bad
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if (bad := _empty_object(v, f"{path}[{i}]")) is not None:
                return bad
    return None


def _infer_schema(rows: list[dict[str, Any]]) -> Any:
    """The schema of all rows (`Table.from_pylist` would take the columns of the first only)."""
    import pyarrow as pa

    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pydict({k: [r.get(k) for r in rows] for k in names}).schema


class _ParquetSink:
    """Spools rows to a JSON Lines file while growing one schema, then writes row groups.

    A Parquet file has one schema, fixed when it is opened; spooling lets a key that first
    appears late still get its column, with memory bounded by one batch. A row whose types
    clash with earlier rows (a string where numbers were) is rejected with the field named.
    Integers and floats in one field become floats (Arrow has one type per column).
    """

    def __init__(self, tmp: Path, name: str, batch_rows: int, batch_bytes: int) -> None:
        self.tmp = tmp
        self.name = name
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.spool_path = tmp.with_name(tmp.name + ".spool.jsonl")
        self.spool = self.spool_path.open("w", encoding="utf-8")
        self.rows: list[tuple[dict[str, Any], Label]] = []
        self.size = 0
        self.schema: Any = None
        self.n = 0
        self.spooled = 0

    def _reject(self, label: Label, field: str | None, message: str) -> WriteError:
        return WriteError(file=self.name, index=label[0], id=label[1], field=field, message=message)

    def add(self, obj: dict[str, Any], label: Label) -> list[WriteError]:
        row = dict(obj)
        if META_KEY in row:  # free-form metadata: a JSON text column
            row[META_KEY] = _encode(row[META_KEY])
        if (bad := _empty_object(row)) is not None:
            return [self._reject(label, bad, "an empty object cannot be stored in Parquet")]
        _encode(row).encode("utf-8")  # lone surrogates fail here, like in the text sinks
        self.rows.append((row, label))
        self.size += _approx_size(row)
        if len(self.rows) >= self.batch_rows or self.size >= self.batch_bytes:
            return self._absorb()
        return []

    def _unify(self, schema: Any) -> Any:
        import pyarrow as pa

        if self.schema is None:
            return schema
        return pa.unify_schemas([self.schema, schema], promote_options="permissive")

    def _absorb(self) -> list[WriteError]:
        """Merge the batch's schema into the file's and spool the rows that fit."""
        import pyarrow as pa

        clash = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
        rejects: list[WriteError] = []
        kept = [r for r, _ in self.rows]
        try:
            self.schema = self._unify(_infer_schema(kept))
        except clash:
            kept = []
            for row, label in self.rows:  # find the rows that clash, one by one
                try:
                    self.schema = self._unify(_infer_schema([row]))
                    kept.append(row)
                except clash as e:
                    rejects.append(
                        self._reject(
                            label,
                            _clash_field(str(e), row),
                            f"does not fit the Parquet schema of the earlier records: {e}",
                        )
                    )
        for row in kept:
            self.spool.write(_encode(row) + "\n")
        self.spooled += len(kept)
        self.rows, self.size = [], 0
        return rejects

    def close(self) -> list[WriteError]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rejects = self._absorb()
        self.spool.close()
        try:
            if self.schema is None:  # no record: an empty file with no columns
                pq.write_table(pa.table({}), self.tmp)
                return rejects
            schema = self.schema.with_metadata({_JSON_COLUMNS_KEY: json.dumps([META_KEY]).encode()})
            with (
                pq.ParquetWriter(self.tmp, schema) as writer,
                self.spool_path.open(encoding="utf-8") as f,
            ):
                batch: list[dict[str, Any]] = []
                size = 0
                for line in f:
                    batch.append(json.loads(line))
                    size += len(line)
                    if len(batch) >= self.batch_rows or size >= self.batch_bytes:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        self.n += len(batch)
                        batch, size = [], 0
                if batch:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    self.n += len(batch)
            return rejects
        finally:
            self.spool_path.unlink(missing_ok=True)

    def abort(self) -> None:
        self.spool.close()
        self.spool_path.unlink(missing_ok=True)


def _clash_field(error: str, row: dict[str, Any]) -> str | None:
    """The column named in Arrow's merge error ('Field n has incompatible types')."""
    m = re.search(r"Field (\S+) has incompatible", error)
    if m and m.group(1) in row:
        return m.group(1)
    return next((k for k in row if k in error), None)


class RecordWriter:
    """Writes records to `.json` / `.jsonl` / `.parquet`, atomically (renamed on success).

    `output_format` None keeps each record's own format. `write` raises `RecordWriteError` for a
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
    ) -> None:
        self.path = Path(path)
        if output_format is not None and output_format not in FORMAT_NAMES:
            raise FormatError(
                f"unknown --output-format '{output_format}'; use one of {', '.join(FORMAT_NAMES)}"
            )
        self.output_format = output_format
        self.fields = FieldMap.parse(fields) if isinstance(fields, str) else fields
        self.source_fields = (
            FieldMap.parse(source_fields) if isinstance(source_fields, str) else source_fields
        )
        if output_format == "fields" and self.fields is None:
            raise FormatError(
                "--output-format fields needs --output-fields instruction=KEY,response=KEY"
            )
        ext = self.path.suffix.lower()
        if ext not in WRITE_EXTENSIONS:
            raise FormatError(
                f"{path}: unknown output type '{ext}'; use {', '.join(WRITE_EXTENSIONS)}"
            )
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink: _TextSink | _ParquetSink = (
            _ParquetSink(self._tmp, str(path), parquet_batch_rows, parquet_batch_bytes)
            if ext == ".parquet"
            else _TextSink(self._tmp, array=ext == ".json")
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
                bad = _find_surrogate(record.raw, _ANY_SURROGATE)
                field, message = bad and bad[0], "a lone surrogate cannot be written as UTF-8"
            raise RecordWriteError(
                WriteError(
                    file=str(self.path),
                    index=record.index,
                    id=record.id,
                    field=field,
                    message=message,
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
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.n += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
