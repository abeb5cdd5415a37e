"""Dataset shapes: detect them, turn input objects into `Record`s and records back into objects.

Pure functions, no I/O (files are the job of `read.py` and `write.py`). Supported shapes:

- `items`    ReAlign: `{"id", "items": [{"from": "human", "value", "category"?, "evidence"?},
             {"from": "gpt", "value"}]}`; `evidence` is ReAlign's precomputed search snippets
             (a list of strings), used instead of a new search (`input_evidence`)
- `sharegpt` `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`
- `alpaca`   `{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}`;
             the user turn is `instruction + "\\n\\n" + input` when `input` is non-empty
- `messages` OpenAI chat: `{"messages": [{"role", "content"}]}`
- `fields`   any flat object through a `FieldMap` (`instruction=question,response=answer`)

Fidelity rules:
- `Record.raw` is the input object exactly. Writing a record back to its own format patches a
  copy of `raw` (only the turns whose content changed, plus the `realign` key when the
  metadata changed), so every other value stays as it was; `raw` itself is never modified.
- Writing to another format builds the conversation from the turns and carries the unknown
  top-level keys along, in their original position. Per-turn unknown keys (`Turn.extra`, e.g.
  ReAlign's `category`) go with the turn into `items` and `sharegpt`; `messages` keeps only
  `role`/`content` (OpenAI's validator rejects other keys), and for `messages`, `alpaca` and
  `fields` the first user turn's `category` becomes a top-level `category` instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from realign.records import Evidence, RealignMeta, Record, Role, Turn

FormatName = Literal["items", "sharegpt", "alpaca", "messages", "fields"]
FORMAT_NAMES: tuple[str, ...] = get_args(FormatName)
META_KEY = "realign"
# How many records auto-detection looks at.
DETECT_SAMPLE = 20

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
_ROLE_TO_FROM: dict[Role, str] = {"user": "human", "assistant": "gpt", "system": "system"}
_CHAT_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_LIST_KEY = {"items": "items", "sharegpt": "conversations", "messages": "messages"}
# Keys likely to hold an instruction / a response, for the `--fields` hint in detection errors.
_INSTRUCTION_GUESSES = ("instruction", "question", "prompt", "query", "problem", "input", "text")
_RESPONSE_GUESSES = ("response", "answer", "output", "completion", "solution", "target", "chosen")


class FormatError(ValueError):
    """The input as a whole cannot be read as asked (unknown or ambiguous format, bad mapping)."""


class RecordError(ValueError):
    """One record does not fit its format. `field` is a path such as `items[1].value`."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class FieldMap(BaseModel):
    """Which keys of a flat object hold the instruction, the response and the optional parts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction: str
    response: str
    input: str | None = None  # joined to the instruction like alpaca's `input`
    system: str | None = None
    id: str | None = None

    @classmethod
    def parse(cls, spec: str) -> FieldMap:
        """`instruction=question,response=answer[,input=..][,system=..][,id=..]`."""
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
        return {k for k in (self.instruction, self.response, self.input, self.system) if k}


# ---------------------------------------------------------------- detection


def _looks_like(obj: Mapping[str, Any]) -> list[str]:
    hits = [fmt for fmt, key in _LIST_KEY.items() if isinstance(obj.get(key), list)]
    if "instruction" in obj and "output" in obj:
        hits.append("alpaca")
    return hits


def detect_format(objs: Iterable[Mapping[str, Any]]) -> str:
    """The format of the first records; `FormatError` naming the keys seen when unsure.

    `fields` is never guessed: a flat object needs an explicit `--fields` mapping.
    """
    sample = [o for o in objs if isinstance(o, Mapping)][:DETECT_SAMPLE]
    if not sample:
        raise FormatError("no JSON object among the first records: cannot detect the format")
    votes: Counter[str] = Counter()
    for i, obj in enumerate(sample):
        hits = _looks_like(obj)
        if len(hits) > 1:
            raise FormatError(
                f"ambiguous format: record {i} has keys {sorted(obj)} that fit "
                f"{' and '.join(hits)}; pass --input-format {'|'.join(hits)}"
            )
        if hits:
            votes[hits[0]] += 1
    if len(votes) > 1:
        seen = ", ".join(f"{fmt} ({n} records)" for fmt, n in votes.most_common())
        raise FormatError(
            f"ambiguous format: the first {len(sample)} records look like {seen}; "
            f"pass --input-format {'|'.join(votes)}"
        )
    if votes:
        return next(iter(votes))
    keys: Counter[str] = Counter(k for o in sample for k in o)
    seen_keys = ", ".join(f"{k} ({n})" for k, n in keys.most_common(20))
    raise FormatError(
        f"unknown format: keys seen in the first {len(sample)} records: {seen_keys}. "
        f"Pass --input-format {{{','.join(FORMAT_NAMES)}}}, or map a flat record with "
        f"{_fields_hint(sample)}"
    )


def _fields_hint(sample: list[Mapping[str, Any]]) -> str:
    str_keys = {k for o in sample for k, v in o.items() if isinstance(v, str)}
    instr = next((k for k in _INSTRUCTION_GUESSES if k in str_keys), None)
    resp = next((k for k in _RESPONSE_GUESSES if k in str_keys and k != instr), None)
    return f"--fields instruction={instr or 'KEY'},response={resp or 'KEY'}"


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
    if numbers and isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    raise RecordError(_show(path), f"expected a string, got {_type_name(v)}")


def _chat_content(obj: Mapping[str, Any], path: Path) -> str:
    v = obj
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
    raise RecordError(_show(path), f"expected a string or text parts, got {_type_name(v)}")


def _parse_list(obj: Mapping[str, Any], fmt: str) -> tuple[list[Turn], list[_Slot]]:
    key = _LIST_KEY[fmt]
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


def _optional_text(obj: Mapping[str, Any], key: str | None) -> str:
    if key is None or obj.get(key) is None:
        return ""
    return _text(obj, (key,), numbers=True)


def _parse_flat(
    obj: Mapping[str, Any],
    instr: str,
    resp: str,
    inp: str | None,
    system: str | None,
    *,
    history_key: str | None = None,
) -> tuple[list[Turn], list[_Slot]]:
    turns: list[Turn] = []
    slots: list[_Slot] = []
    if system and _optional_text(obj, system):
        turns.append(Turn(role="system", content=_text(obj, (system,))))
        slots.append(_Slot((system,)))
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
    for key in (instr, resp):
        if obj.get(key) is None:
            what = "instruction" if key == instr else "response"
            raise RecordError(key, f"missing: every record needs its {what}")
    text = _text(obj, (instr,), numbers=True)
    extra_input = _optional_text(obj, inp)
    user = text + ("\n\n" + extra_input if extra_input else "")
    turns.append(Turn(role="user", content=user))
    slots.append(_Slot((instr,), (inp,) if inp else None))
    turns.append(Turn(role="assistant", content=_text(obj, (resp,), numbers=True)))
    slots.append(_Slot((resp,)))
    return turns, slots


def _parse(
    obj: Mapping[str, Any], fmt: str, fields: FieldMap | None
) -> tuple[list[Turn], list[_Slot]]:
    if fmt in _LIST_KEY:
        return _parse_list(obj, fmt)
    if fmt == "alpaca":
        return _parse_flat(obj, "instruction", "output", "input", "system", history_key="history")
    if fmt == "fields":
        if fields is None:
            raise FormatError(
                "format 'fields' needs a mapping: --fields instruction=KEY,response=KEY"
            )
        return _parse_flat(obj, fields.instruction, fields.response, fields.input, fields.system)
    raise FormatError(f"unknown format '{fmt}'; use one of {', '.join(FORMAT_NAMES)}")


def _record_id(obj: Mapping[str, Any], key: str, index: int) -> str:
    v = obj.get(key)
    if v is None:
        return str(index)
    if isinstance(v, dict | list):
        raise RecordError(key, f"expected a string or number, got {_type_name(v)}")
    return str(v)


def _meta(obj: Mapping[str, Any]) -> RealignMeta:
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
    turns, _ = _parse(obj, fmt, fields)
    id_key = fields.id if fmt == "fields" and fields and fields.id else "id"
    return Record(
        id=_record_id(obj, id_key, index),
        index=index,
        turns=turns,
        source_format=fmt,
        raw=obj,
        meta=_meta(obj),
    )


def input_task_type(record: Record, turn_index: int) -> str | None:
    """The task type the input gives for assistant turn `turn_index`, if any.

    ReAlign puts it as `category` on the human turn; flat datasets as a top-level
    `category` or `task_type`.
    """
    for i in range(min(turn_index, len(record.turns)) - 1, -1, -1):
        turn = record.turns[i]
        if turn.role == "user":
            cat = turn.extra.get("category")
            if isinstance(cat, str) and cat.strip():
                return cat.strip()
            break
    for key in ("category", "task_type"):
        cat = record.raw.get(key)
        if isinstance(cat, str) and cat.strip():
            return cat.strip()
    return None


# ---------------------------------------------------------------- writing


class _CopyOnWrite:
    """Edits a copy of `raw`, copying only the containers on the edited paths.

    Everything not edited is shared with `raw` (cheap for large records); the result is only
    serialized by the writers, never mutated.
    """

    def __init__(self, raw: dict[str, Any]) -> None:
        self.out = dict(raw)
        self._copied = {id(self.out)}

    def container(self, path: Path) -> Any:
        node: Any = self.out
        for p in path:
            child = node[p]
            if id(child) not in self._copied:
                child = dict(child) if isinstance(child, dict) else list(child)
                node[p] = child
                self._copied.add(id(child))
            node = child
        return node

    def set(self, path: Path, value: Any) -> None:
        self.container(path[:-1])[path[-1]] = value


def _meta_dump(meta: RealignMeta) -> dict[str, Any]:
    return meta.model_dump(mode="json", exclude_defaults=True)


def _patch(record: Record, fields: FieldMap | None) -> dict[str, Any] | None:
    """`raw` with the changed turns and metadata written in; None when the turns no longer fit."""
    fmt = record.source_format
    try:
        old, slots = _parse(record.raw, fmt, fields)
    except (RecordError, KeyError, IndexError, TypeError):
        return None
    if [t.role for t in old] != [t.role for t in record.turns]:
        return None
    cow = _CopyOnWrite(record.raw)
    for turn, before, slot in zip(record.turns, old, slots, strict=True):
        if turn.content != before.content:
            if slot.join is not None:
                extra_input = _optional_text(record.raw, slot.join[0])
                tail = "\n\n" + extra_input
                if extra_input and turn.content.endswith(tail):
                    cow.set(slot.path, turn.content[: -len(tail)])
                else:
                    cow.set(slot.path, turn.content)
                    if extra_input:
                        cow.set(slot.join, "")
            else:
                cow.set(slot.path, turn.content)
        if turn.extra != before.extra and fmt in _LIST_KEY:
            item = cow.container(slot.path[:-1])
            for k in before.extra:
                item.pop(k, None)
            item.update(turn.extra)
    out = cow.out
    if record.meta != _meta(record.raw):
        dump = _meta_dump(record.meta)
        if dump:
            out[META_KEY] = dump
        else:
            out.pop(META_KEY, None)
    return out


def _source_keys(record: Record, source_fields: FieldMap | None) -> set[str]:
    fmt = record.source_format
    if fmt in _LIST_KEY:
        return {_LIST_KEY[fmt]}
    if fmt == "alpaca":
        return {"instruction", "input", "output", "system", "history"}
    if fmt == "fields" and source_fields is not None:
        return source_fields.content_keys()
    return set()


def _first_category(turns: list[Turn]) -> Any:
    return next(
        (t.extra["category"] for t in turns if t.role == "user" and "category" in t.extra), None
    )


def _build_list(turns: list[Turn], fmt: str) -> list[dict[str, Any]]:
    if fmt == "messages":
        return [{"role": t.role, "content": t.content} for t in turns]
    return [{"from": _ROLE_TO_FROM[t.role], "value": t.content, **t.extra} for t in turns]


def _build_flat(turns: list[Turn], fmt: str, fields: FieldMap | None) -> dict[str, Any]:
    system = [t.content for t in turns if t.role == "system"]
    rest = [t for t in turns if t.role != "system"]
    if len(system) > 1 or (system and turns[0].role != "system"):
        raise RecordError(
            None, f"{fmt} holds one leading system message; this record has {len(system)}"
        )
    roles = [t.role for t in rest]
    if not rest or roles != ["user", "assistant"] * (len(rest) // 2):
        raise RecordError(
            None,
            f"{fmt} needs user/assistant pairs ending with an assistant turn; this record has "
            f"turns {'/'.join(t.role for t in turns) or 'none'}",
        )
    pairs = [(rest[i].content, rest[i + 1].content) for i in range(0, len(rest), 2)]
    if fmt == "alpaca":
        out: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
        if system:
            out["system"] = system[0]
        if len(pairs) > 1:
            out["history"] = [list(p) for p in pairs[:-1]]
        return out
    assert fields is not None
    if len(pairs) > 1:
        raise RecordError(
            None,
            f"fields holds one instruction and one response; this record has {len(pairs)} exchanges",
        )
    if system and not fields.system:
        raise RecordError(None, "the record has a system message but --fields has no system=KEY")
    out = {fields.instruction: pairs[0][0], fields.response: pairs[0][1]}
    if fields.input:
        out[fields.input] = ""
    if system and fields.system:
        out[fields.system] = system[0]
    return out


def _build(
    record: Record, fmt: str, fields: FieldMap | None, source_fields: FieldMap | None
) -> dict[str, Any]:
    if fmt in _LIST_KEY:
        body: dict[str, Any] = {_LIST_KEY[fmt]: _build_list(record.turns, fmt)}
    else:
        body = _build_flat(record.turns, fmt, fields)
    skip = _source_keys(record, source_fields) | {META_KEY}
    out: dict[str, Any] = {}
    for key, value in record.raw.items():
        if key in skip:
            if key != META_KEY and not any(k in out for k in body):
                out.update(body)  # the conversation takes the place of the source's
        elif key not in body:
            out[key] = value
    for key, value in body.items():
        out.setdefault(key, value)
    if fmt in ("messages", "alpaca", "fields") and "category" not in out:
        cat = _first_category(record.turns)
        if cat is not None:
            out["category"] = cat
    if fmt == "fields" and fields and fields.id and fields.id not in out:
        out[fields.id] = record.raw.get("id", record.id)
    dump = _meta_dump(record.meta)
    if dump:
        out[META_KEY] = dump
    return out


def from_record(
    record: Record,
    fmt: str | None = None,
    fields: FieldMap | None = None,
    source_fields: FieldMap | None = None,
) -> dict[str, Any]:
    """The object to write for `record` in format `fmt` (default: the record's own format).

    `fields` maps the output when `fmt` is `fields`; `source_fields` is the mapping the record
    was read with (defaults to `fields`). `RecordError` when the format cannot hold the record
    (e.g. a multi-turn conversation into `fields`). The result shares unchanged values with
    `record.raw` (records can be large): serialize it, or deep-copy it before mutating.
    """
    fmt = fmt or record.source_format
    if fmt not in FORMAT_NAMES:
        raise FormatError(f"unknown format '{fmt}'; use one of {', '.join(FORMAT_NAMES)}")
    if fmt == "fields" and fields is None:
        raise FormatError(
            "output format 'fields' needs a mapping (--output-fields instruction=KEY,response=KEY)"
        )
    source_fields = source_fields or fields
    same = fmt == record.source_format and (fmt != "fields" or fields == source_fields)
    if same:
        patched = _patch(record, source_fields)
        if patched is not None:
            return patched
    return _build(record, fmt, fields, source_fields)
