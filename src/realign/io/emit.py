"""Records back into objects: patch the input object in place, or build another format.

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

from typing import Any

from realign.io.formats import (
    FORMAT_NAMES,
    LIST_KEY,
    META_KEY,
    ROLE_TO_FROM,
    FieldMap,
    FormatError,
    Path,
    RecordError,
    optional_text,
    parse_turns,
    read_meta,
)
from realign.records import RealignMeta, Record, Turn


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
        old, slots = parse_turns(record.raw, fmt, fields)
    except (RecordError, KeyError, IndexError, TypeError):
        return None
    if [t.role for t in old] != [t.role for t in record.turns]:
        return None
    cow = _CopyOnWrite(record.raw)
    for turn, before, slot in zip(record.turns, old, slots, strict=True):
        if turn.content != before.content:
            if slot.join is not None:
                extra_input = optional_text(record.raw, slot.join)
                tail = "\n\n" + extra_input
                if extra_input and turn.content.endswith(tail):
                    cow.set(slot.path, turn.content[: -len(tail)])
                else:
                    cow.set(slot.path, turn.content)
                    if extra_input:
                        cow.set(slot.join, "")
            else:
                cow.set(slot.path, turn.content)
        if turn.extra != before.extra and fmt in LIST_KEY:
            item = cow.container(slot.path[:-1])
            for k in before.extra:
                item.pop(k, None)
            item.update(turn.extra)
    out = cow.out
    if record.meta != read_meta(record.raw):
        dump = _meta_dump(record.meta)
        if dump:
            out[META_KEY] = dump
        else:
            out.pop(META_KEY, None)
    return out


def _source_keys(record: Record, source_fields: FieldMap | None) -> set[str]:
    fmt = record.source_format
    if fmt in LIST_KEY:
        return {LIST_KEY[fmt]}
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
    return [{"from": ROLE_TO_FROM[t.role], "value": t.content, **t.extra} for t in turns]


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
    if fmt in LIST_KEY:
        body: dict[str, Any] = {LIST_KEY[fmt]: _build_list(record.turns, fmt)}
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
