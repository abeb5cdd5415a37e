"""Values that JSON cannot hold, kept without change: the one rule for them.

Records read from Parquet (or Hugging Face datasets) can hold bytes, dates, times, decimals,
map entries (pairs) and non-finite floats; a JSON text input can hold `NaN` / `Infinity`
(what `json.dumps` of a pandas frame writes). Three views of such a value:

- `pack` / `unpack`: a reversible JSON form for realign's own files (the run state, the
  Parquet spool), so a value comes back exactly as read: `{"$realign.value": KIND, "v": ...}`.
- `json_value`: how a JSON / JSON Lines output writes it (documented in the README): bytes as
  base64, dates and times as ISO 8601, a duration as ISO 8601 (`P1DT3.5S`), a decimal as its
  digits in a string, map entries as `[key, value]` pairs. A non-finite float has no JSON form:
  `json_text` names the field instead (`NonFiniteError`), and the record fails.
- `readable`: the failures file's view, valid JSON always: `json_value`, and a non-finite float
  as the string `"NaN"` / `"Infinity"` / `"-Infinity"`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

TAG = "$realign.value"


def non_finite_token(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _duration(v: dt.timedelta) -> str:
    sign = "-" if v < dt.timedelta(0) else ""
    v = abs(v)
    seconds = f"{v.seconds}.{v.microseconds:06d}{getattr(v, 'nanoseconds', 0):03d}"
    return f"{sign}P{v.days}DT{seconds.rstrip('0').rstrip('.')}S"


def _packed(kind: str, v: Any) -> dict[str, Any]:
    return {TAG: kind, "v": v}


def _pack_scalar(v: Any) -> Any:
    """The tagged form of one non-JSON scalar; `v` itself when JSON holds it as it is."""
    if isinstance(v, float):
        return v if math.isfinite(v) else _packed("float", non_finite_token(v))
    if isinstance(v, bytes | bytearray | memoryview):
        return _packed("bytes", base64.b64encode(bytes(v)).decode("ascii"))
    if isinstance(v, dt.datetime):
        # pandas' Timestamp (what Arrow gives for nanosecond columns) keeps its nanoseconds
        kind = "timestamp" if getattr(v, "nanosecond", 0) else "datetime"
        return _packed(kind, v.isoformat())
    if isinstance(v, dt.date):
        return _packed("date", v.isoformat())
    if isinstance(v, dt.time):
        return _packed("time", v.isoformat())
    if isinstance(v, dt.timedelta):
        if getattr(v, "nanoseconds", 0):  # pandas' Timedelta, from a nanosecond column
            return _packed("timedelta_ns", getattr(v, "value"))  # noqa: B009 (pandas only)
        return _packed("timedelta", [v.days, v.seconds, v.microseconds])
    if isinstance(v, Decimal):
        return _packed("decimal", str(v))
    return v


_PLAIN = frozenset({str, int, bool, type(None)})  # JSON holds these as they are


def pack(obj: Any) -> Any:
    """`obj` in a JSON form `unpack` reverses; the same object when nothing needed packing."""
    kind = type(obj)
    if kind in _PLAIN:  # the common case first: most records hold nothing else
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else _packed("float", non_finite_token(obj))
    if isinstance(obj, dict):
        out: dict[Any, Any] | None = None
        for k, v in obj.items():
            p = v if type(v) in _PLAIN else pack(v)
            if p is not v:
                if out is None:
                    out = dict(obj)
                out[k] = p
        if TAG in obj:  # a user key that looks like ours: wrap it, so unpack leaves it alone
            return _packed("object", out if out is not None else obj)
        return obj if out is None else out
    if isinstance(obj, list):
        items: list[Any] | None = None
        for i, v in enumerate(obj):
            p = v if type(v) in _PLAIN else pack(v)
            if p is not v:
                if items is None:
                    items = list(obj)
                items[i] = p
        return obj if items is None else items
    if isinstance(obj, tuple):
        return _packed("tuple", [pack(v) for v in obj])
    return _pack_scalar(obj)


_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _unpack_tagged(kind: str, v: Any) -> Any:
    if kind == "float":
        return _FLOATS[v]
    if kind == "bytes":
        return base64.b64decode(v)
    if kind == "datetime":
        return dt.datetime.fromisoformat(v)
    if kind == "timestamp":
        import pandas as pd  # only pandas makes a datetime with nanoseconds

        return pd.Timestamp(v)
    if kind == "date":
        return dt.date.fromisoformat(v)
    if kind == "time":
        return dt.time.fromisoformat(v)
    if kind == "timedelta":
        return dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2])
    if kind == "timedelta_ns":
        import pandas as pd

        return pd.Timedelta(v, unit="ns")
    if kind == "decimal":
        return Decimal(v)
    if kind == "tuple":
        return tuple(unpack(x) for x in v)
    if kind == "object":
        return {k: unpack(x) for k, x in v.items()}
    raise ValueError(f"unknown packed value kind {kind!r}")


def unpack(obj: Any) -> Any:
    """The values `pack` stored (the same object when there were none)."""
    if isinstance(obj, dict):
        if len(obj) == 2 and isinstance(obj.get(TAG), str) and "v" in obj:
            return _unpack_tagged(obj[TAG], obj["v"])
        out: dict[Any, Any] | None = None
        for k, v in obj.items():
            if type(v) in _PLAIN:
                continue
            u = unpack(v)
            if u is not v:
                if out is None:
                    out = dict(obj)
                out[k] = u
        return obj if out is None else out
    if isinstance(obj, list):
        items: list[Any] | None = None
        for i, v in enumerate(obj):
            if type(v) in _PLAIN:
                continue
            u = unpack(v)
            if u is not v:
                if items is None:
                    items = list(obj)
                items[i] = u
        return obj if items is None else items
    return obj


def json_value(v: Any) -> Any:
    """A JSON output's form of a value JSON cannot hold (the `default` of `json.dumps`)."""
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, dt.date | dt.time):  # datetime is a date
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return _duration(v)
    if isinstance(v, Decimal):
        return str(v)
    raise TypeError(f"a {type(v).__name__} value cannot be written as JSON")


class NonFiniteError(ValueError):
    """A non-finite float where JSON text is written; `field` is its path."""

    def __init__(self, field: str, value: float) -> None:
        self.field = field
        self.token = non_finite_token(value)
        super().__init__(
            f"{self.token} is not a JSON number: JSON and JSON Lines cannot hold it "
            "(write .parquet to keep it, or replace it in the input)"
        )


def find_non_finite(obj: Any, path: str = "") -> tuple[str, float] | None:
    """The path of the first non-finite float in `obj`, and the float."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path, obj
    items = (
        obj.items()
        if isinstance(obj, dict)
        else enumerate(obj)
        if isinstance(obj, list | tuple)
        else ()
    )
    for k, v in items:
        sub = f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k))
        if (bad := find_non_finite(v, sub)) is not None:
            return bad
    return None


def json_text(obj: Any) -> str:
    """`obj` as JSON text by the output rule; `NonFiniteError` naming a NaN / Infinity."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, default=json_value)
    except ValueError as e:
        bad = find_non_finite(obj)
        if bad is None:
            raise
        raise NonFiniteError(*bad) from e


def readable(obj: Any) -> Any:
    """`obj` as plain JSON values, for the failures file: never invalid JSON, never a crash."""
    if isinstance(obj, dict):
        return {k: readable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [readable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return non_finite_token(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    try:
        return json_value(obj)
    except TypeError:
        return repr(obj)
