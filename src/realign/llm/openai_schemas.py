"""JSON schemas for OpenAI structured outputs: `$ref`s inlined, strict-mode compatible."""

from __future__ import annotations

import copy
import re
from typing import Any

# Keywords OpenAI strict mode may reject; the engine validates them with pydantic anyway.
_STRICT_DROP = {
    "default",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
}
_SUBSCHEMA_KEYS = {"items", "anyOf", "oneOf", "allOf", "prefixItems", "not"}


def tool_schema(json_schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The request's schema, `$ref`s inlined, titled `name` (LangChain takes the title as the
    tool / response-format name; llama.cpp's grammar builder and strict mode both prefer
    schemas without `$defs`)."""
    schema = inline_refs(copy.deepcopy(json_schema))
    schema.pop("$defs", None)
    schema.pop("definitions", None)
    schema["title"] = _safe_name(name)
    return schema


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every local `$ref` ("#/$defs/Name") replaced by what it points to; keys
    beside a `$ref` (a field's description) are kept over the target's. A recursive `$ref`
    stays a `$ref` (it cannot be inlined)."""

    def resolve(ref: str) -> Any:
        node: Any = schema
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def walk(node: Any, active: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [walk(x, active) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and ref not in active:
            target = walk(resolve(ref), active | {ref})
            rest = {k: walk(v, active) for k, v in node.items() if k != "$ref"}
            return {**target, **rest} if isinstance(target, dict) else target
        return {k: walk(v, active) for k, v in node.items()}

    return walk(schema, frozenset())  # type: ignore[no-any-return]


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy that OpenAI strict mode accepts: every object closed with all its properties
    required, validation-only keywords dropped (the engine still validates them)."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _STRICT_DROP:
                continue
            if key in ("properties", "$defs", "definitions", "patternProperties"):
                out[key] = {k: walk(v) for k, v in value.items()}  # names, not keywords
            elif key in _SUBSCHEMA_KEYS or (
                key == "additionalProperties" and isinstance(value, dict)
            ):
                out[key] = walk(value)
            else:
                out[key] = value
        if out.get("type") == "object" or "properties" in out:
            out["required"] = list(out.get("properties", {}))
            out["additionalProperties"] = False
        return out

    return walk(schema)


def _safe_name(name: str) -> str:
    # OpenAI tool / schema names: ^[a-zA-Z0-9_-]{1,64}$
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64] or "Output"
