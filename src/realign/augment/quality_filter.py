"""Keep what a judge scores high enough: phi-1 style filtering ("Textbooks Are All You Need").

Each assistant turn of a record is scored 1-10 on each chosen aspect by the pointwise judge of
`realign.judge` (same prompts and rubrics as `realign judge`; `educational_value` is one more
rubric file beside alignment, factuality and readability). A record stays when every one of
its turns reaches `min_score` on every aspect; its lowest score per aspect, with the judge's
rationale, goes into `realign.scores`, and the whole verdict into `realign.quality_filter`.
A record with no assistant turn has nothing to vouch for it and is dropped, with that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import BaseModel, Field

from realign import judge
from realign.criteria import CriteriaPack
from realign.llm.engine import Engine
from realign.records import JudgeScore, Record

UNKNOWN_TASK = judge.UNKNOWN_TASK
ESTIMATED_OUTPUT_TOKENS = 90  # a short rationale and a score, for `--dry-run`


class UnitScore(BaseModel):
    turn: int
    aspect: str
    score: int
    rationale: str


class Verdict(BaseModel):
    aspects: list[str]
    min_score: int
    kept: bool
    reason: str
    lowest: dict[str, int] = Field(default_factory=dict)  # aspect -> lowest unit score
    units: list[UnitScore] = Field(default_factory=list)


class Filtered(BaseModel):
    """The result of one record: the record (scores added to its metadata) and the verdict."""

    record: Record
    verdict: Verdict
    task_type: str


def task_type(record: Record) -> str:
    turns = record.assistant_turns()
    return (judge.task_type_of(record, turns[0]) if turns else None) or UNKNOWN_TASK


def decide(units: Sequence[UnitScore], aspects: Sequence[str], min_score: int) -> Verdict:
    """Pure: kept when every unit reaches `min_score` on every aspect."""
    if not units:
        return Verdict(
            aspects=list(aspects),
            min_score=min_score,
            kept=False,
            reason="no assistant turn to judge",
        )
    lowest: dict[str, UnitScore] = {}
    for u in units:
        if u.aspect not in lowest or u.score < lowest[u.aspect].score:
            lowest[u.aspect] = u
    failing = [lowest[a] for a in aspects if a in lowest and lowest[a].score < min_score]
    if failing:
        worst = min(failing, key=lambda u: u.score)
        reason = (
            f"{worst.aspect} {worst.score} < {min_score} (turn {worst.turn}): {worst.rationale}"
        )
    else:
        reason = "all scores ≥ " + str(min_score)
    return Verdict(
        aspects=list(aspects),
        min_score=min_score,
        kept=not failing,
        reason=reason,
        lowest={a: u.score for a, u in lowest.items()},
        units=list(units),
    )


async def score_record(
    engine: Engine,
    record: Record,
    aspects: Sequence[str],
    min_score: int,
    *,
    pack: CriteriaPack | None = None,
    references: judge.ReferenceIndex | None = None,
) -> Filtered:
    """Judge every (turn, aspect) of `record`; a failed call raises (the record then goes to
    the failures file, and a rerun retries it)."""
    units = judge.units_of(record)

    async def one(u: judge.Unit, aspect: str) -> UnitScore:
        ref = references.lookup([u.id], u.instruction, u.position) if references else None
        req = judge.pointwise_request(u, aspect, pack=pack, reference=ref)
        (out,) = await engine.structured(req, judge.PointwiseOutput)
        return UnitScore(turn=u.turn, aspect=aspect, score=out.score, rationale=out.rationale)

    scores = await asyncio.gather(*(one(u, a) for u in units for a in aspects))
    verdict = decide(scores, aspects, min_score)
    for aspect in aspects:
        worst = min((s for s in scores if s.aspect == aspect), key=lambda s: s.score, default=None)
        if worst is not None:
            record.meta.scores[aspect] = JudgeScore(score=worst.score, rationale=worst.rationale)
    # Per-turn scores only add something when there is more than one turn.
    multi_turn = len(units) > 1
    setattr(  # noqa: B010 (an extra key of RealignMeta)
        record.meta, "quality_filter", verdict.model_dump(exclude=None if multi_turn else {"units"})
    )
    return Filtered(record=record, verdict=verdict, task_type=task_type(record))
