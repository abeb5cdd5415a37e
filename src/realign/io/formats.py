"""Dataset shapes, and input objects turned into `Record`s (`detect.py` tells the shape of a
dataset, `emit.py` turns records back into objects).

Pure functions, no I/O (files are the job of `read.py` and `write.py`). Supported shapes:

- `items`    ReAlign: `{"id", "items": [{"from": "human", "value", "category"?, "evidence"?},
             {"from": "gpt", "value"}]}`; `evidence` is ReAlign's precomputed search snippets
             (a list of strings), used instead of a new search (`input_evidence`)
- `sharegpt` `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`
- `alpaca`   `{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}`;
             the user turn is `instruction + "\\n\\n" + input` when `input` is non-empty
- `messages` OpenAI chat: `{"messages": [{"role", "content"}]}`
- `fields`   any flat object through a `FieldMap` (`instruction=question,response=answer`)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from realign.records import Evidence, RealignMeta, Record, Role, Turn
from realign.values import non_finite_token

FormatName = Literal["items", "sharegpt", "alpaca", "messages", "fields"]
FORMAT_NAMES: tuple[str, ...] = get_args(FormatName)
META_KEY = "realign"

# Role labels seen in the wild for from/value conversations.
_FROM_TO_ROLE: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
}
ROLE_TO_FROM: dict[Role, str] = {"user": "human", "assistant": "gpt", "system": "system"}
_CHAT_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
LIST_KEY = {"items": "items", "sharegpt": "conversations", "messages": "messages"}


class FormatError(ValueError):
    """The input as a whole cannot be read as asked (unknown or ambiguous format, bad mapping)."""


class RecordError(ValueError):
    """One record does not fit its format. `field` is a path such as `items[1].value`."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class FieldMap(BaseModel):
    """Which keys of a flat object hold the instruction, the response and the optional parts.

    A key may be a dotted path into nested objects and lists (`instances.0.output`): a key
    the object holds as it is wins over the path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction: str
    response: str
    input: str | None = None  # joined to the instruction like alpaca's `input`
    system: str | None = None
    id: str | None = None
    task_type: str | None = None  # the record's task type (like ReAlign's `category`)

    @classmethod
    def parse(cls, spec: str) -> FieldMap:
        """`instruction=question,response=answer[,input=..][,system=..][,id=..][,task_type=..]`."""
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, key = part.partition("=")
            name, key = name.strip(), key.strip()
            if not sep or not name or not key:
                raise FormatError(
                    f"--fields: '{part}' is not NAME=KEY; example: "
                    "--fields instruction=question,response=answer"
                )
            if name not in cls.model_fields:
                raise FormatError(
                    f"--fields: unknown name '{name}'; use {', '.join(cls.model_fields)}"
                )
            pairs[name] = key
        missing = [n for n in ("instruction", "response") if n not in pairs]
        if missing:
            raise FormatError(
                f"--fields: {' and '.join(missing)} missing; example: "
                "--fields instruction=question,response=answer"
            )
        return cls(**pairs)

    def spec(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.model_dump(exclude_none=True).items())

    def content_keys(self) -> set[str]:
        """The top-level keys the conversation is read from (a nested path's top-level key
        holds other values too, so it is not one of them)."""
        keys = (self.instruction, self.response, self.input, self.system)
        return {k for k in keys if k and "." not in k}


# ---------------------------------------------------------------- reading

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class _Slot:
    """Where a turn's content lives in the raw object; `join` is alpaca's `input` path."""

    path: Path
    join: Path | None = None


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__
    )


def _show(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _text(obj: Mapping[str, Any], path: Path, *, numbers: bool = False) -> str:
    v: Any = obj
    for p in path:
        v = v[p]
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):  # never the text "nan" sent to a model
        raise RecordError(
            _show(path),
            f"{non_finite_token(v)} is not text (a missing value written as a number?); "
            "give it a string, or drop the record",
        )
    if numbers and isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    raise RecordError(_show(path), f"expected a string, got {_type_name(v)}")


def resolve(obj: Any, spec: str) -> tuple[Path | None, str]:
    """Where `spec` (a key, or a dotted path with list indices) is in `obj`: its path, or
    None and what is missing ('instances[0] has no output')."""
    if isinstance(obj, Mapping) and spec in obj:
        return (spec,), ""
    if "." not in spec:
        return None, f"no '{spec}'"
    node: Any = obj
    path: list[str | int] = []
    for part in spec.split("."):
        key: str | int
        if isinstance(node, Mapping) and part in node:
            key = part
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            key = int(part)
        else:
            where = _show(tuple(path)) or "the record"
            if isinstance(node, Mapping):
                return None, f"{where} has no '{part}'"
            if isinstance(node, list):
                return None, f"{where} has {len(node)} items, no [{part}]"
            return None, f"{where} is {_type_name(node)}, not an object or array"
        path.append(key)
        node = node[key]
    return tuple(path), ""


def _value(obj: Mapping[str, Any], spec: str | None) -> tuple[Path | None, Any]:
    if spec is None:
        return None, None
    path, _ = resolve(obj, spec)
    if path is None:
        return None, None
    v: Any = obj
    for p in path:
        v = v[p]
    return path, v


def _chat_content(obj: Mapping[str, Any], path: Path) -> str:
    v: Any = obj
    for p in path:
        v = v[p]
    if isinstance(v, str):
        return v
    if isinstance(v, list):  # content parts: only text is supported
        texts = []
        for j, part in enumerate(v):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else _type_name(part)
                raise RecordError(f"{_show(path)}[{j}]", f"content part '{kind}' is not text")
            texts.append(_text(obj, (*path, j, "text")))
        return "\n".join(texts)
    if isinstance(v, float):
        _text(obj, path)  # NaN / Infinity: named as such
    raise RecordError(_show(path), f"expected a string or text parts, got {_type_name(v)}")


def _parse_list(obj: Mapping[str, Any], fmt: str) -> tuple[list[Turn], list[_Slot]]:
    key = LIST_KEY[fmt]
    chat = fmt == "messages"
    role_key, text_key = ("role", "content") if chat else ("from", "value")
    labels = _CHAT_ROLES if chat else _FROM_TO_ROLE
    conv = obj.get(key)
    if not isinstance(conv, list):
        raise RecordError(key, f"expected an array of turns, got {_type_name(conv)}")
    turns, slots = [], []
    for i, t in enumerate(conv):
        where = f"{key}[{i}]"
        if not isinstance(t, dict):
            raise RecordError(where, f"expected an object, got {_type_name(t)}")
        label = t.get(role_key)
        if not isinstance(label, str) or label.lower() not in labels:
            raise RecordError(
                f"{where}.{role_key}",
                f"unsupported role {label!r}; expected one of {', '.join(labels)}",
            )
        if text_key not in t:
            raise RecordError(f"{where}.{text_key}", "missing")
        path: Path = (key, i, text_key)
        content = _chat_content(obj, path) if chat else _text(obj, path)
        extra = {k: v for k, v in t.items() if k not in (role_key, text_key)}
        if EVIDENCE_KEY in extra:
            _check_evidence(extra[EVIDENCE_KEY], f"{where}.{EVIDENCE_KEY}")
        turns.append(Turn(role=labels[label.lower()], content=content, extra=extra))
        slots.append(_Slot(path))
    return turns, slots


EVIDENCE_KEY = "evidence"
_SNIPPET_KEYS = ("snippet", "content")


def _check_evidence(value: Any, where: str) -> None:
    """ReAlign's `evidence`: a list of snippets, each a string (or an object with a `snippet`
    or `content` string). Checked when read, so a malformed list fails only its record."""
    if not isinstance(value, list):
        raise RecordError(where, f"expected an array of snippets, got {_type_name(value)}")
    for j, e in enumerate(value):
        if isinstance(e, str):
            continue
        if isinstance(e, dict) and any(isinstance(e.get(k), str) for k in _SNIPPET_KEYS):
            continue
        raise RecordError(
            f"{where}[{j}]",
            f"expected a string or an object with 'snippet' text, got {_type_name(e)}",
        )


def input_evidence(record: Record, turn_index: int) -> list[Evidence]:
    """The search evidence the input already carries for assistant turn `turn_index` (ReAlign
    stores it as `evidence` on the question's turn), so no new search is needed. Blank
    snippets are dropped; [] when there is none."""
    user = next((i for i in range(turn_index - 1, -1, -1) if record.turns[i].role == "user"), None)
    if user is None:
        return []
    out = []
    for e in record.turns[user].extra.get(EVIDENCE_KEY) or []:
        if isinstance(e, str):
            e = {"snippet": e}
        snippet = next((e[k] for k in _SNIPPET_KEYS if isinstance(e.get(k), str)), "")
        if snippet.strip():
            out.append(
                Evidence(
                    snippet=snippet.strip(),
                    title=str(e.get("title") or ""),
                    url=str(e.get("url") or e.get("link") or ""),
                    provider="input",
                )
            )
    return out


def optional_text(obj: Mapping[str, Any], key: str | Path | None) -> str:
    """The text at `key` (a key, a dotted path, or a resolved path); '' when it is missing."""
    path, v = _value(obj, key) if isinstance(key, str) or key is None else (key, _at(obj, key))
    if path is None or v is None:
        return ""
    return _text(obj, path, numbers=True)


def _at(obj: Any, path: Path) -> Any:
    try:
        for p in path:
            obj = obj[p]
    except (KeyError, IndexError, TypeError):
        return None
    return obj


def _task_type(obj: Mapping[str, Any], spec: str | None) -> dict[str, Any]:
    """The user turn's `category` from the mapped task type column ({} when it has none)."""
    path, v = _value(obj, spec)
    if path is None or v is None:
        return {}
    if not isinstance(v, str):
        raise RecordError(_show(path), f"expected a task type name, got {_type_name(v)}")
    return {"category": v.strip()} if v.strip() else {}


def _parse_flat(
    obj: Mapping[str, Any],
    instr: str,
    resp: str,
    inp: str | None,
    system: str | None,
    *,
    history_key: str | None = None,
    task_type: str | None = None,
) -> tuple[list[Turn], list[_Slot]]:
    turns: list[Turn] = []
    slots: list[_Slot] = []
    system_path, _ = _value(obj, system)
    if system_path is not None and optional_text(obj, system_path):
        turns.append(Turn(role="system", content=_text(obj, system_path)))
        slots.append(_Slot(system_path))
    history = obj.get(history_key) if history_key else None
    if history is not None:  # LLaMA-Factory's multi-turn alpaca
        if not isinstance(history, list):
            raise RecordError(
                "history", f"expected an array of [q, a] pairs, got {_type_name(history)}"
            )
        for k, pair in enumerate(history):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise RecordError(f"history[{k}]", "expected a [question, answer] pair")
            for j, role in ((0, "user"), (1, "assistant")):
                turns.append(Turn(role=role, content=_text(obj, ("history", k, j))))
                slots.append(_Slot(("history", k, j)))
    paths: list[Path] = []
    for key in (instr, resp):
        path, missing = resolve(obj, key)
        if path is None or _at(obj, path) is None:
            what = "instruction" if key == instr else "response"
            detail = f" ({missing})" if path is None and "." in key and key not in obj else ""
            raise RecordError(key, f"missing{detail}: every record needs its {what}")
        paths.append(path)
    text = _text(obj, paths[0], numbers=True)
    input_path, _ = _value(obj, inp)
    extra_input = optional_text(obj, input_path) if input_path is not None else ""
    user = text + ("\n\n" + extra_input if extra_input else "")
    turns.append(Turn(role="user", content=user, extra=_task_type(obj, task_type)))
    slots.append(_Slot(paths[0], input_path))
    turns.append(Turn(role="assistant", content=_text(obj, paths[1], numbers=True)))
    slots.append(_Slot(paths[1]))
    return turns, slots


def parse_turns(
    obj: Mapping[str, Any], fmt: str, fields: FieldMap | None
) -> tuple[list[Turn], list[_Slot]]:
    if fmt in LIST_KEY:
        return _parse_list(obj, fmt)
    if fmt == "alpaca":
        return _parse_flat(obj, "instruction", "output", "input", "system", history_key="history")
    if fmt == "fields":
        if fields is None:
            raise FormatError(
                "format 'fields' needs a mapping: --fields instruction=KEY,response=KEY"
            )
        return _parse_flat(
            obj,
            fields.instruction,
            fields.response,
            fields.input,
            fields.system,
            task_type=fields.task_type,
        )
    raise FormatError(f"unknown format '{fmt}'; use one of {', '.join(FORMAT_NAMES)}")


def _record_id(obj: Mapping[str, Any], key: str, index: int) -> str:
    path, v = _value(obj, key)
    if path is None or v is None:
        return str(index)
    if isinstance(v, dict | list):
        raise RecordError(key, f"expected a string or number, got {_type_name(v)}")
    if isinstance(v, float) and not math.isfinite(v):
        raise RecordError(key, f"{non_finite_token(v)} is not a usable id")
    return str(v)


def read_meta(obj: Mapping[str, Any]) -> RealignMeta:
    raw = obj.get(META_KEY)
    if raw is None:
        return RealignMeta()
    try:
        return RealignMeta.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = _show((META_KEY, *err["loc"]))
        raise RecordError(where, err["msg"]) from None


def to_record(obj: Any, index: int, fmt: str, fields: FieldMap | None = None) -> Record:
    """Build a `Record` from one input object; `RecordError` names the offending field."""
    if not isinstance(obj, dict):
        raise RecordError(None, f"expected a JSON object, got {_type_name(obj)}")
    turns, _ = parse_turns(obj, fmt, fields)
    id_key = fields.id if fmt == "fields" and fields and fields.id else "id"
    return Record(
        id=_record_id(obj, id_key, index),
        index=index,
        turns=turns,
        source_format=fmt,
        raw=obj,
        meta=read_meta(obj),
    )
