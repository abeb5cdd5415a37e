"""What is judged: one unit per assistant turn, the reference answers, and how the records of
two datasets are paired."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from realign.records import FilterDecision, Record, Status, input_task_type
from realign.stages.classify import context_text

CONTEXT_BUDGET = 1000  # tokens of earlier turns shown to the judge
UNKNOWN_TASK = "unknown"


class Unit(BaseModel):
    """One assistant turn of a record, with what the judge needs to see about it."""

    id: str
    index: int
    turn: int
    position: int  # 0 for the record's first assistant turn, 1 for the second, …
    task_type: str | None
    context: str
    instruction: str
    response: str
    status: Status | None = None  # from a `realign run` output, when present
    reason: str = ""
    original: str | None = None
    filter: FilterDecision | None = None


def task_type_of(record: Record, turn: int) -> str | None:
    """The task type realign assigned to this turn, else the one the input gives (ReAlign's
    `category`), else None."""
    for u in record.meta.units:
        if u.turn == turn and u.task_type:
            return u.task_type
    turns = record.assistant_turns()
    if record.meta.task_type and turns and turns[0] == turn:
        return record.meta.task_type
    own = record.turns[turn].extra.get("category")
    if isinstance(own, str) and own.strip():
        return own.strip()
    return input_task_type(record, turn)


def units_of(record: Record) -> list[Unit]:
    out = []
    for pos, turn in enumerate(record.assistant_turns()):
        meta = next((u for u in record.meta.units if u.turn == turn), None)
        out.append(
            Unit(
                id=record.id,
                index=record.index,
                turn=turn,
                position=pos,
                task_type=task_type_of(record, turn),
                context=context_text(record, turn, budget=CONTEXT_BUDGET),
                instruction=record.instruction_for(turn),
                response=record.turns[turn].content,
                status=meta.status if meta else None,
                reason=meta.reason if meta else "",
                original=meta.original if meta else None,
                filter=meta.filter if meta else None,
            )
        )
    return out


def _norm_instruction(text: str) -> str:
    return " ".join(text.split()).lower()


class ReferenceIndex:
    """Reference answers, found by record id or, failing that, by instruction text."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._by_id: dict[str, Record] = {}
        self._by_instruction: dict[str, Record] = {}
        for r in records:
            self._by_id.setdefault(r.id, r)
            self._by_instruction.setdefault(_norm_instruction(r.instruction), r)

    def __len__(self) -> int:
        return len(self._by_id)

    def lookup(self, ids: Sequence[str], instruction: str, position: int) -> str | None:
        rec = next((self._by_id[i] for i in ids if i in self._by_id), None)
        if rec is None:
            rec = self._by_instruction.get(_norm_instruction(instruction))
        if rec is None:
            return None
        turns = rec.assistant_turns()
        if not turns:
            return None
        # Same assistant turn when the reference is multi-turn too, else its only answer.
        return rec.turns[turns[min(position, len(turns) - 1)]].content


class UnmatchedRecord(BaseModel):
    side: Literal["a", "b"]
    id: str
    index: int
    instruction: str
    reason: str


class RecordPair(BaseModel):
    a: Record
    b: Record
    matched_by: Literal["id", "instruction"]


class MatchingInfo(BaseModel):
    pairs: int = 0
    by_id: int = 0
    by_instruction: int = 0
    unmatched: list[UnmatchedRecord] = Field(default_factory=list)
    # Pairs matched by id whose instructions differ: a sign the ids do not mean the same item.
    instruction_mismatch_ids: list[str] = Field(default_factory=list)


def unmatched_record(side: Literal["a", "b"], r: Record, reason: str) -> UnmatchedRecord:
    return UnmatchedRecord(
        side=side, id=r.id, index=r.index, instruction=r.instruction[:300], reason=reason
    )


def match_records(
    a: Sequence[Record], b: Sequence[Record]
) -> tuple[list[RecordPair], MatchingInfo]:
    """Pair records by id; the rest by instruction text (first unused match wins)."""
    info = MatchingInfo()
    b_by_id: dict[str, int] = {}
    for j, r in enumerate(b):
        b_by_id.setdefault(r.id, j)
    used_b: set[int] = set()
    pairs: dict[int, RecordPair] = {}
    for i, r in enumerate(a):
        found = b_by_id.get(r.id)
        if found is not None and found not in used_b:
            j = found
            used_b.add(j)
            pairs[i] = RecordPair(a=r, b=b[j], matched_by="id")
            if _norm_instruction(r.instruction) != _norm_instruction(b[j].instruction):
                info.instruction_mismatch_ids.append(r.id)
    by_text: dict[str, list[int]] = defaultdict(list)
    for j, r in enumerate(b):
        if j not in used_b:
            by_text[_norm_instruction(r.instruction)].append(j)
    for i, r in enumerate(a):
        if i in pairs:
            continue
        queue = by_text.get(_norm_instruction(r.instruction))
        if queue:
            j = queue.pop(0)
            used_b.add(j)
            pairs[i] = RecordPair(a=r, b=b[j], matched_by="instruction")
        else:
            info.unmatched.append(
                unmatched_record("a", r, "no record in B with this id or instruction")
            )
    for j, r in enumerate(b):
        if j not in used_b:
            info.unmatched.append(
                unmatched_record("b", r, "no record in A with this id or instruction")
            )
    out = [pairs[i] for i in sorted(pairs)]
    info.pairs = len(out)
    info.by_id = sum(p.matched_by == "id" for p in out)
    info.by_instruction = info.pairs - info.by_id
    return out, info
