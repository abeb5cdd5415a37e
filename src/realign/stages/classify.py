"""Stage 1: give each unit (assistant turn) a task type from the active criteria pack.

Order of sources: the input's own label (ReAlign's `category`) unless `reclassify`; then the
offline embedding classifier when chosen and confident enough; then the LLM classifier;
finally `default`. Every choice records where it came from and why.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, Field, create_model

from realign import prompts, tokens
from realign.criteria import CriteriaPack
from realign.llm.base import ChatRequest, ShortText
from realign.llm.engine import Engine
from realign.records import Record, UnitMeta, ensure_units, input_task_type

DEFAULT_TYPE = "default"
CONTEXT_TOKENS = 600  # earlier turns shown to the classifier, newest kept
INSTRUCTION_TOKENS = 1500

Source = Literal["input", "llm", "embedding", "default"]


@dataclass(frozen=True)
class TaskChoice:
    task_type: str
    source: Source
    reason: str
    confidence: float | None = None


class EmbeddingPredictor(Protocol):
    """What the offline classifier offers (see `realign.stages.embedding`): one
    prediction with `task_type` and `confidence` per instruction."""

    def predict(self, instructions: Sequence[str]) -> Sequence[object]: ...


def classification_schema(pack: CriteriaPack) -> type[BaseModel]:
    """Output model whose JSON schema lists the pack's names (so constrained decoding can only
    emit a known name) but which validates any string, so an unknown answer is not re-asked
    forever: it becomes `default` with the reason recorded."""
    return _classification_schema(tuple(pack.names()))


@functools.cache
def _classification_schema(names: tuple[str, ...]) -> type[BaseModel]:
    # One class per set of names: building a model costs ~1 ms, and the engine and the
    # backend cache their per-schema work by class and by schema.
    return create_model(
        "TaskClassification",
        reason=(ShortText, Field(description="One short sentence.")),
        task_type=(str, Field(json_schema_extra={"enum": list(names)})),
    )


def context_text(record: Record, turn: int, budget: int = CONTEXT_TOKENS) -> str:
    """The turns before the unit's instruction, newest last, cut to `budget` tokens."""
    user_turn = max((i for i in range(turn) if record.turns[i].role == "user"), default=-1)
    lines = [f"{t.role}: {t.content}" for t in record.turns[: max(user_turn, 0)]]
    text = "\n".join(lines)
    # A token is at least one byte: a short text needs no count (most records have no context).
    if len(text) * 4 <= budget or tokens.count(text) <= budget:
        return text
    enc = tokens.encoding()
    ids = enc.encode(text, disallowed_special=())
    return "…" + enc.decode(ids[-budget:])


def resolve_name(name: str, pack: CriteriaPack, why: str) -> TaskChoice | None:
    """Map an answer onto the pack; None when it is not in it."""
    clean = name.strip().strip("`'\"").lower().replace(" ", "_").replace("-", "_")
    return TaskChoice(clean, "llm", why) if clean in pack else None


def fallback(pack: CriteriaPack, reason: str) -> TaskChoice:
    return TaskChoice(DEFAULT_TYPE, "default", reason)


def classify_request(pack: CriteriaPack, record: Record, turn: int) -> ChatRequest:
    """The LLM classifier's request for the unit at `turn` (without its output schema)."""
    messages = prompts.render(
        "classify",
        criteria=[pack[n] for n in pack.names()],
        context=context_text(record, turn),
        instruction=tokens.truncate(record.instruction_for(turn), INSTRUCTION_TOKENS),
    )
    return ChatRequest(stage="classify", messages=messages, max_tokens=200, record_id=record.id)


async def classify_llm(engine: Engine, pack: CriteriaPack, record: Record, turn: int) -> TaskChoice:
    schema = classification_schema(pack)
    request = classify_request(pack, record, turn)
    (answer,) = await engine.structured(request, schema)
    data = answer.model_dump()
    choice = resolve_name(data["task_type"], pack, data["reason"])
    if choice is None:
        return fallback(
            pack, f"classifier answered unknown type {data['task_type']!r}: used default"
        )
    return choice


def apply_choice(unit: UnitMeta, choice: TaskChoice) -> None:
    unit.task_type = choice.task_type
    unit.task_source = choice.source
    unit.task_reason = choice.reason
    unit.task_confidence = choice.confidence


async def classify_unit(
    engine: Engine | None,
    pack: CriteriaPack,
    record: Record,
    unit: UnitMeta,
    *,
    reclassify: bool = False,
) -> None:
    """Set `unit.task_type` and its provenance. Never raises for an unknown name.

    A unit already typed by `pretype_offline` keeps its type; one it was unsure of carries
    the reason in `task_reason`, which is kept in front of what happens next.
    """
    if unit.task_source == "embedding" and unit.task_type is not None:
        return
    note = f"{unit.task_reason}; " if unit.task_reason else ""
    label = input_task_type(record, unit.turn)
    if label is not None and not reclassify and not note:
        if label in pack:
            apply_choice(unit, TaskChoice(label, "input", "task type given in the input"))
            return
        note = f"input task type {label!r} is not in criteria pack '{pack.name}'; "
    if engine is None:
        apply_choice(unit, fallback(pack, note + "no LLM classifier configured: used default"))
        return
    choice = await classify_llm(engine, pack, record, unit.turn)
    apply_choice(unit, TaskChoice(choice.task_type, choice.source, note + choice.reason))


EMBED_BATCH = 64  # instructions per embedding call: batching is what makes it fast


def pretype_offline(
    records: Sequence[Record],
    pack: CriteriaPack,
    embedding: EmbeddingPredictor,
    *,
    min_confidence: float = 0.0,
    reclassify: bool = False,
) -> None:
    """Type units with the embedding classifier in one batch, before the per-record stages.

    Units the input already labels with a known type are left alone (unless `reclassify`).
    A confident prediction sets the unit's type (source `embedding`); an unsure one only
    records why, so `classify_unit` asks the LLM (or falls back to `default`) afterwards.
    """
    todo: list[tuple[Record, UnitMeta]] = []
    for r in records:
        for u in ensure_units(r):
            label = input_task_type(r, u.turn)
            if u.task_type is None and (reclassify or label is None or label not in pack):
                todo.append((r, u))
    if not todo:
        return
    preds = embedding.predict([r.instruction_for(u.turn) for r, u in todo])
    for (_, unit), pred in zip(todo, preds, strict=True):
        name, conf = pred.task_type, float(pred.confidence)  # type: ignore[attr-defined]
        if conf >= min_confidence and name in pack:
            apply_choice(unit, TaskChoice(name, "embedding", "embedding classifier", conf))
        else:
            unit.task_confidence = conf
            unit.task_reason = (
                f"embedding classifier unsure ({name}, confidence {conf:.2f} < {min_confidence})"
            )
