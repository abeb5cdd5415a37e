"""Pointwise judging: a 1-10 score per aspect for every assistant turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from realign import metrics
from realign.criteria import CriteriaPack
from realign.judge.requests import (
    JudgeFailure,
    PointwiseOutput,
    Progress,
    judge_call,
    pointwise_request,
    run_pool,
)
from realign.judge.stats import (
    MIN_FOR_RATES,
    ScoreStats,
    by_task_type,
    rationale_warnings,
    score_stats,
)
from realign.judge.units import ReferenceIndex, units_of
from realign.llm.engine import Engine
from realign.records import JudgeScore, Record


class ScoredUnit(BaseModel):
    id: str
    index: int
    turn: int
    position: int
    task_type: str | None
    instruction: str
    response: str
    reference: str | None
    metrics: metrics.ResponseMetrics
    scores: dict[str, JudgeScore] = Field(default_factory=dict)


class AspectScores(BaseModel):
    overall: ScoreStats
    by_task_type: dict[str, ScoreStats]


class ScoresReport(BaseModel):
    kind: Literal["scores"] = "scores"
    input: str
    reference: str | None
    model: str
    backend: str
    aspects: list[str]
    resamples: int
    seed: int
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    summary: dict[str, AspectScores]
    metrics: metrics.MetricsSummary
    units: list[ScoredUnit]
    failures: list[JudgeFailure]
    read_errors: list[str] = Field(default_factory=list)  # input records that could not be read
    # Why the judge model looks unfit (all ties, "][" rationales, …): see `scores_warnings`.
    judge_warnings: list[str] = Field(default_factory=list)


async def judge_pointwise(
    engine: Engine,
    records: Sequence[Record],
    aspects: Sequence[str],
    *,
    pack: CriteriaPack | None,
    references: ReferenceIndex | None = None,
    input_name: str = "",
    reference_name: str | None = None,
    on_total: Progress | None = None,
    on_progress: Progress | None = None,
    workers: int = 16,
    resamples: int = 1000,
    seed: int = 0,
) -> ScoresReport:
    units = [u for r in records for u in units_of(r)]
    refs = [
        references.lookup([u.id], u.instruction, u.position) if references else None for u in units
    ]
    scored = [
        ScoredUnit(
            id=u.id,
            index=u.index,
            turn=u.turn,
            position=u.position,
            task_type=u.task_type,
            instruction=u.instruction,
            response=u.response,
            reference=ref,
            metrics=metrics.response_metrics(u.response, ref, u.task_type, u.instruction),
        )
        for u, ref in zip(units, refs, strict=True)
    ]
    failures: list[JudgeFailure] = []
    if on_total:
        on_total(len(units) * len(aspects))

    def job(k: int, aspect: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            u = units[k]
            req = pointwise_request(u, aspect, pack=pack, reference=refs[k])
            out, err, raw = await judge_call(engine, req, PointwiseOutput)
            if isinstance(out, PointwiseOutput):
                scored[k].scores[aspect] = JudgeScore(score=out.score, rationale=out.rationale)
            else:
                failures.append(
                    JudgeFailure(
                        id=u.id, turn=u.turn, aspect=aspect, error=err or "", raw_output=raw
                    )
                )
            if on_progress:
                on_progress(1)

        return run

    await run_pool((job(k, a) for k in range(len(units)) for a in aspects), workers)
    # Keep the scores in aspect order whatever order the calls finished in.
    for s in scored:
        s.scores = {a: s.scores[a] for a in aspects if a in s.scores}
    summary = {}
    for aspect in aspects:
        # Keyed by position in the input: ids may repeat, records may not.
        items = [
            (str(s.index), s.scores[aspect].score, s.task_type)
            for s in scored
            if aspect in s.scores
        ]
        groups = by_task_type([(tt, (key, sc)) for key, sc, tt in items])
        summary[aspect] = AspectScores(
            overall=score_stats([(k, sc) for k, sc, _ in items], resamples=resamples, seed=seed),
            by_task_type={
                tt: score_stats(g, resamples=resamples, seed=seed) for tt, g in groups.items()
            },
        )
    failures.sort(key=lambda f: (f.id, f.turn, f.aspect))
    report = ScoresReport(
        input=input_name,
        reference=reference_name,
        model=engine.backend.model,
        backend=engine.backend.backend_id,
        aspects=list(aspects),
        resamples=resamples,
        seed=seed,
        summary=summary,
        metrics=metrics.summarize([s.metrics for s in scored]),
        units=scored,
        failures=failures,
    )
    report.judge_warnings = scores_warnings(report)
    return report


def scores_warnings(rep: ScoresReport) -> list[str]:
    """What makes pointwise scores meaningless: [] when nothing looks degenerate."""
    out = []
    for aspect in rep.aspects:
        scores = [u.scores[aspect] for u in rep.units if aspect in u.scores]
        distinct = {s.score for s in scores}
        if len(scores) >= MIN_FOR_RATES and len(distinct) == 1:
            out.append(
                f"{aspect}: all {len(scores)} responses got the same score ({distinct.pop()})"
            )
        out += rationale_warnings(aspect, [s.rationale for s in scores])
    return out
