"""The stream of objects every input is read as, and the checks each record passes there.

Reading yields `(position, object_or_ReadError)`: a bad record (wrong type, bytes that are not
UTF-8, a lone surrogate, nested over `MAX_DEPTH`, over the size limit) becomes a `ReadError`
naming the file, the line or record and the field, with the record's text when it could not be
kept as an object, and the records after it still come.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from realign.io.errors import ReadError
from realign.values import find_non_finite

# ~1M tokens, beyond any model's context. Decimal MB, like --max-record-mb and the messages.
DEFAULT_MAX_RECORD_BYTES = 4_000_000
# Deeper records are rejected: real conversations nest a handful of levels, and past a few
# hundred the JSON parsers (Python's and pydantic's) and the recursive walks fail.
MAX_DEPTH = 100
SURROGATE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of non-UTF-8 bytes
ANY_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: maybe a lone surrogate


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


def find_surrogate(
    obj: Any, pattern: re.Pattern[str] = SURROGATE, path: str = ""
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
            return (f"{path}.{printable(k)}" if path else printable(k)) + " (key)", m.group()
        sub = f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k))
        if (bad := find_surrogate(v, pattern, sub)) is not None:
            return bad
    return None


def surrogate_field(obj: Any) -> str | None:
    """The path of the first string (or key) of `obj` holding a surrogate, which no UTF-8
    file or SQLite text can store; None when there is none."""
    bad = find_surrogate(obj, ANY_SURROGATE)
    return None if bad is None else bad[0]


def printable(text: str) -> str:
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


def approx_size(obj: Any) -> int:
    return sum(len(s) for _, s in _walk_strings(obj)) + 16


def strip_nulls(obj: Any) -> Any:
    """Parquet/Arrow fill missing struct keys with null; read them back as missing."""
    if isinstance(obj, dict):
        return {k: strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [strip_nulls(v) for v in obj]
    return obj


def label_id(obj: dict[str, Any]) -> str | None:
    """The record's `id` for error messages: None when there is none fit to show."""
    rid = obj.get("id")
    if rid is None or isinstance(rid, dict | list):
        return None
    if isinstance(rid, float) and not math.isfinite(rid):
        return None
    return str(rid)


def mb(n: int) -> str:
    """Decimal units, like --max-record-mb: 4.0 MB is 4,000,000 bytes."""
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


def encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


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
        self.notes: list[str] = []  # what the reader decided for the user to know
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
            (item.obj, item.size, item.text) if isinstance(item, ParsedText) else (item, None, None)
        )
        if isinstance(obj, ReadError):
            return obj
        if not isinstance(obj, dict):
            return self.error(
                f"expected a JSON object, got {_type_name(obj)}",
                line=line,
                index=index,
                text=None if text is None else printable(text),
            )
        rid = label_id(obj)
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
                text=None if text is None else printable(text),
            )
        if text is not None and (problem := _surrogate_problem(obj, text, item.suspect)):
            return self.error(
                problem[1],
                line=line,
                index=index,
                id=None if rid is None else printable(rid),
                field=problem[0],
                text=printable(text),
            )
        if text is not None and _OVERFLOW_HINT.search(text) and (big := _overflow(text)):
            return self.error(
                f"the number {big[:40]} is beyond the range of a float: no output can keep "
                "it unchanged (it would become Infinity); write it as a string",
                line=line,
                index=index,
                id=None if rid is None else printable(rid),
                field=_inf_field(obj),
                text=printable(text),
            )
        if size is None:  # no source text: count the characters of the strings
            size = approx_size(obj)
        if size > self.max_record_bytes // 4:  # a cheap bound first: a char is at most 4 bytes
            size = len(
                json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8", "surrogateescape")
            )
            if size > self.max_record_bytes:
                field, n = _largest_field(obj)
                return self.error(
                    f"record is {mb(size)}, over the {mb(self.max_record_bytes)} limit "
                    f"(largest field {mb(n)}; raise --max-record-mb to accept it)",
                    line=line,
                    index=index,
                    id=rid,
                    field=field,
                    record=obj,
                )
        return obj


# A float literal with a 3-digit exponent, or 309+ digits, may overflow to infinity.
_OVERFLOW_HINT = re.compile(r"[eE][+]?\d{3}|\d{309}")


class _Overflow(ValueError):
    pass


def _finite_float(token: str) -> float:
    v = float(token)
    if math.isinf(v):
        raise _Overflow(token)
    return v


def _overflow(text: str) -> str | None:
    """The first number of `text` too large for a float (which `json` reads as infinity)."""
    try:
        json.loads(text, parse_float=_finite_float)
    except _Overflow as e:
        return str(e)
    except ValueError:
        return None
    return None


def _inf_field(obj: Any) -> str | None:
    bad = find_non_finite(obj)
    return None if bad is None else bad[0]


@dataclass(frozen=True)
class ParsedText:
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
    if undecodable and (bad := find_surrogate(obj)) is not None:
        return bad[0], "not valid UTF-8 (undecodable bytes; shown as \\xNN in the text)"
    if (
        "\\u" in text  # cheap first: most records hold no escape at all
        and _ESCAPED_SURROGATE.search(text)
        and (bad := find_surrogate(obj, ANY_SURROGATE))
    ):
        code = f"\\u{ord(bad[1]):04x}"
        return bad[0], (
            f"lone surrogate {code} (half of a UTF-16 pair) is not text and cannot be written "
            "as UTF-8; fix or remove it in the input"
        )
    return None
