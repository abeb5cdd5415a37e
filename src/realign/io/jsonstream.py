"""JSON text read as a stream, memory flat: `.jsonl` line by line, `.json` incrementally.

- `.jsonl` is read line by line.
- `.json` (an array) is parsed incrementally, one element at a time. After a JSON syntax
  error the reader finds the record's end by its brackets (or the next line starting a
  record) and goes on; only a record left open to the end of the file takes the rest with it.
  A `.json` file that starts with `{` is read as a sequence of objects (JSON Lines content).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from realign.io.compress import compression, magic_problem, open_read, read_error
from realign.io.errors import ReadError
from realign.io.objects import MAX_DEPTH, SURROGATE, ObjectStream, ParsedText, mb, printable

_CHUNK = 1 << 16
_NON_BLANK = re.compile(r"\S")


def _check_bom(head: bytes, path: Path) -> str | None:
    if compression(path) is None and (problem := magic_problem(head, path)) is not None:
        return problem
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or head[:4] in (
        codecs.BOM_UTF32_LE,
        codecs.BOM_UTF32_BE,
    ):
        return "file is UTF-16/UTF-32 encoded; realign reads UTF-8 (re-save it as UTF-8)"
    return None


def _number_problem(e: ValueError) -> str:
    """A `ValueError` of `json` that is not a syntax error: an integer over Python's limit."""
    if "digits" in str(e):
        return "an integer of more than 4300 digits cannot be read; write it as a string"
    return f"a number that cannot be read ({e})"


def _not_json_lines(text: str) -> bool:
    """A first line that says the file is a `.json` file under a JSON Lines name: it opens an
    array (pretty-printed, or all on one line), or it is a lone `{` (pretty-printed objects
    one after another, as `jq` writes them)."""
    start = text.strip()
    return start.startswith("[") or start == "{"


def jsonl_gen(path: Path) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        index = 0
        seen_text = False
        try:
            with open_read(path) as f:
                for lineno, raw in enumerate(f, start=1):
                    s.done += len(raw)
                    if lineno == 1:
                        if (msg := _check_bom(raw, path)) is not None:
                            yield 0, 1, s.error(msg, line=1)
                            return
                        raw = raw.removeprefix(codecs.BOM_UTF8)
                    if not raw.strip():
                        continue
                    try:
                        text, suspect = raw.decode("utf-8"), False
                    except UnicodeDecodeError:
                        text, suspect = raw.decode("utf-8", "surrogateescape"), True
                    text = text.rstrip("\r\n")
                    if not seen_text and _not_json_lines(text):
                        what = "a JSON array" if text.strip()[0] == "[" else "pretty-printed JSON"
                        s.notes.append(
                            f"{s.name}: holds {what}, not JSON Lines (one object a line); "
                            "read as a .json file"
                        )
                        s.done = 0
                        yield from json_gen(path)(s)
                        return
                    seen_text = True
                    yield index, lineno, _parse_line(s, text, raw, suspect, lineno, index)
                    index += 1
        except (OSError, EOFError) as e:  # a damaged or truncated compressed file
            if compression(path) is None:
                raise
            yield index, None, s.error(read_error(path, e), index=index if seen_text else None)
            return
        if not seen_text:
            yield 0, None, s.error("file is empty: no records")

    return gen


def _parse_line(
    s: ObjectStream, text: str, raw: bytes, suspect: bool, lineno: int, index: int
) -> ParsedText | ReadError:
    try:
        return ParsedText(json.loads(text), len(raw), suspect, text)
    except (ValueError, RecursionError) as e:
        return s.error(
            f"malformed JSON: {e.msg} (column {e.colno})"
            if isinstance(e, json.JSONDecodeError)
            else _number_problem(e)
            if isinstance(e, ValueError)
            else f"nested more than {MAX_DEPTH} levels deep",
            line=lineno,
            index=index,
            text=printable(text),
        )


class _TextBuffer:
    """A growing window over a UTF-8 file for incremental `raw_decode`, tracking lines."""

    def __init__(self, f: IO[bytes], on_read: Callable[[int], None], first: bytes = b"") -> None:
        self.f = f
        self.on_read = on_read
        self.dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = self.dec.decode(first)
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


def json_gen(path: Path) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        with open_read(path) as f:
            try:
                head = f.read(4)
                s.done += len(head)
                if (msg := _check_bom(head, path)) is not None:
                    yield 0, 1, s.error(msg, line=1)
                    return

                def on_read(n: int) -> None:
                    s.done += n

                tb = _TextBuffer(f, on_read, head.removeprefix(codecs.BOM_UTF8))
                yield from _json_records(s, tb)
            except (OSError, EOFError) as e:  # a damaged or truncated compressed file
                if compression(path) is None:
                    raise
                yield 0, None, s.error(read_error(path, e))

    return gen


def _json_records(s: ObjectStream, tb: _TextBuffer) -> Iterator[tuple[int, int | None, Any]]:
    decoder = json.JSONDecoder()
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
                        text=printable(text),
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
            except (ValueError, RecursionError) as e:
                problem = (
                    _number_problem(e)
                    if isinstance(e, ValueError)
                    else f"nested more than {MAX_DEPTH} levels deep"
                )
                err, lost = _skipped(s, tb, index, start_line, problem)
                yield index, start_line, err
                break
            if end < len(tb.buf) or tb.eof or not tb.more():
                suspect = SURROGATE.search(tb.buf, tb.pos, end) is not None
                text = tb.buf[tb.pos : end]
                tb.advance(end)
                yield index, start_line, ParsedText(obj, len(text), suspect, text)
                break  # complete (a bare number at the edge might have continued)
        index += 1
        if array and tb.peek() == ",":
            tb.advance(tb.pos + 1)
        # Anything else (`]`, the next record after a missing comma, stray text) is
        # handled at the top of the loop: stray text becomes a failed record.



def _skipped(
    s: ObjectStream, tb: _TextBuffer, index: int, line: int, problem: str
) -> tuple[ReadError, bool]:
    """The error for a record that did not parse, once the reader has moved past it, and
    whether the rest of the file was lost with it."""
    text, found = _skip_record(tb, s.max_record_bytes)
    if not found and not tb.eof:
        problem += f"; no end of the record within {mb(s.max_record_bytes)}"
    if not found:
        problem += "; the rest of this .json file could not be read"
    else:
        problem += "; reading goes on with the next record"
    return s.error(problem, line=line, index=index, text=printable(text)), not found
