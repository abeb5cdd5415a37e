"""Pairwise judging: B against A, each pair judged in both orders.

Pairwise convention: outcomes are stated for **B (the second input) against A (the first)**:
`win` = B judged better, `lose` = A judged better, `tie` = judged equal. Each pair is judged
twice per aspect, once with A shown first and once with B shown first; only a verdict that
survives the swap counts as a win or a loss, anything else (a flip, or a tie in one order) is
a tie. This removes the judge's position bias from the counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from realign import metrics
from realign.criteria import CriteriaPack
from realign.judge.lc import LengthControlled, length_controlled
from realign.judge.requests import (
    JudgeFailure,
    Outcome,
    PairwiseOutput,
    Progress,
    Side,
    combine_orders,
    judge_call,
    pairwise_request,
    run_pool,
    to_side,
)
from realign.judge.stats import (
    MIN_FOR_RATES,
    OutcomeStats,
    by_task_type,
    outcome_stats,
    rationale_warnings,
)
from realign.judge.units import (
    MatchingInfo,
    RecordPair,
    ReferenceIndex,
    Unit,
    match_records,
    units_of,
    unmatched_record,
)
from realign.llm.engine import Engine
from realign.records import FilterDecision, Record, Status

CONVENTION = (
    "Outcomes are for B (the second input) against A (the first): win = B judged better, "
    "lose = A judged better, tie = judged equal or the verdict changed when the order of the "
    "two responses was swapped. Each pair was judged in both orders per aspect."
)


class OrderVerdict(BaseModel):
    shown_first: Literal["a", "b"]
    winner: Side  # mapped back to the inputs
    rationale: str


class AspectVerdict(BaseModel):
    outcome: Outcome | None  # None when a call failed
    consistent: bool  # both orders named the same side (or both said tie)
    a_first: OrderVerdict | None
    b_first: OrderVerdict | None


class PairResult(BaseModel):
    id_a: str
    id_b: str
    index_a: int
    index_b: int
    turn: int
    position: int  # which assistant turn of the record (0 = first)
    matched_by: Literal["id", "instruction"]
    task_type: str | None
    instruction: str
    response_a: str
    response_b: str
    reference: str | None
    metrics_a: metrics.ResponseMetrics
    metrics_b: metrics.ResponseMetrics
    # What `realign run` decided for B's unit, when B is a run output.
    status_b: Status | None = None
    reason_b: str = ""
    filter_b: FilterDecision | None = None
    verdicts: dict[str, AspectVerdict] = Field(default_factory=dict)


class AspectSummary(BaseModel):
    overall: OutcomeStats
    by_task_type: dict[str, OutcomeStats]
    # B's win rate at equal length (`judge/lc.py`); None below `lc.MIN_UNITS` judged units.
    length_controlled: LengthControlled | None = None
    lc_by_task_type: dict[str, LengthControlled | None] = Field(default_factory=dict)


class Comparison(BaseModel):
    kind: Literal["comparison"] = "comparison"
    convention: str = CONVENTION
    a: str
    b: str
    reference: str | None
    model: str
    backend: str
    aspects: list[str]
    resamples: int
    seed: int
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    matching: MatchingInfo
    summary: dict[str, AspectSummary]
    metrics_a: metrics.MetricsSummary
    metrics_b: metrics.MetricsSummary
    pairs: list[PairResult]
    failures: list[JudgeFailure]
    read_errors: list[str] = Field(default_factory=list)  # input records that could not be read
    # Why the judge model looks unfit (all ties, "][" rationales, …): see `comparison_warnings`.
    judge_warnings: list[str] = Field(default_factory=list)


def pair_units(
    pairs: Sequence[RecordPair], info: MatchingInfo
) -> list[tuple[RecordPair, Unit, Unit]]:
    out: list[tuple[RecordPair, Unit, Unit]] = []
    for p in pairs:
        ua, ub = units_of(p.a), units_of(p.b)
        if len(ua) != len(ub):
            info.unmatched.append(
                unmatched_record(
                    "b",
                    p.b,
                    f"A's record {p.a.id} has {len(ua)} assistant turns and B's has {len(ub)}; "
                    f"only the first {min(len(ua), len(ub))} are compared",
                )
            )
        out.extend((p, x, y) for x, y in zip(ua, ub, strict=False))
    return out


async def judge_pairwise(
    engine: Engine,
    records_a: Sequence[Record],
    records_b: Sequence[Record],
    aspects: Sequence[str],
    *,
    pack: CriteriaPack | None,
    references: ReferenceIndex | None = None,
    names: tuple[str, str] = ("A", "B"),
    reference_name: str | None = None,
    on_total: Progress | None = None,
    on_progress: Progress | None = None,
    workers: int = 16,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    pairs, info = match_records(records_a, records_b)
    units = pair_units(pairs, info)
    results: list[PairResult] = []
    for p, ua, ub in units:
        task_type = ub.task_type or ua.task_type
        ref = references.lookup([ua.id, ub.id], ua.instruction, ua.position) if references else None
        results.append(
            PairResult(
                id_a=ua.id,
                id_b=ub.id,
                index_a=ua.index,
                index_b=ub.index,
                turn=ub.turn,
                position=ub.position,
                matched_by=p.matched_by,
                task_type=task_type,
                instruction=ua.instruction,
                response_a=ua.response,
                response_b=ub.response,
                reference=ref,
                metrics_a=metrics.response_metrics(ua.response, ref, task_type, ua.instruction),
                metrics_b=metrics.response_metrics(ub.response, ref, task_type, ua.instruction),
                status_b=ub.status,
                reason_b=ub.reason,
                filter_b=ub.filter,
            )
        )
    orders: dict[tuple[int, str, bool], OrderVerdict] = {}
    failures: list[JudgeFailure] = []
    if on_total:
        on_total(len(units) * len(aspects) * 2)

    def job(k: int, aspect: str, b_first: bool) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            _, ua, ub = units[k]
            first, second = (ub, ua) if b_first else (ua, ub)
            req = pairwise_request(
                first,
                second,
                aspect,
                task_type=results[k].task_type,
                pack=pack,
                reference=results[k].reference,
            )
            out, err, raw = await judge_call(engine, req, PairwiseOutput)
            if isinstance(out, PairwiseOutput):
                orders[(k, aspect, b_first)] = OrderVerdict(
                    shown_first="b" if b_first else "a",
                    winner=to_side(out.winner, b_first),
                    rationale=out.rationale,
                )
            else:
                failures.append(
                    JudgeFailure(
                        id=ua.id,
                        turn=ua.turn,
                        aspect=aspect,
                        order="b_first" if b_first else "a_first",
                        error=err or "",
                        raw_output=raw,
                    )
                )
            if on_progress:
                on_progress(1)

        return run

    await run_pool(
        (job(k, a, bf) for k in range(len(units)) for a in aspects for bf in (False, True)),
        workers,
    )
    for k, res in enumerate(results):
        for aspect in aspects:
            va, vb = orders.get((k, aspect, False)), orders.get((k, aspect, True))
            both = va is not None and vb is not None
            res.verdicts[aspect] = AspectVerdict(
                outcome=combine_orders(va.winner, vb.winner) if va and vb else None,
                consistent=both and va.winner == vb.winner,  # type: ignore[union-attr]
                a_first=va,
                b_first=vb,
            )
    summary = {aspect: _summarise(results, aspect, resamples, seed) for aspect in aspects}
    failures.sort(key=lambda f: (f.id, f.turn, f.aspect, f.order or ""))
    cmp = Comparison(
        a=names[0],
        b=names[1],
        reference=reference_name,
        model=engine.backend.model,
        backend=engine.backend.backend_id,
        aspects=list(aspects),
        resamples=resamples,
        seed=seed,
        matching=info,
        summary=summary,
        metrics_a=metrics.summarize([r.metrics_a for r in results]),
        metrics_b=metrics.summarize([r.metrics_b for r in results]),
        pairs=results,
        failures=failures,
    )
    cmp.judge_warnings = comparison_warnings(cmp)
    return cmp


def _summarise(results: list[PairResult], aspect: str, resamples: int, seed: int) -> AspectSummary:
    """Raw outcome rates and the length-controlled win rate, overall and per task type."""
    Row = tuple[tuple[str, Outcome, bool], tuple[str, Outcome, int, int]]
    rows: list[tuple[str | None, Row]] = []
    for r in results:
        v = r.verdicts[aspect]
        if v.outcome is None:
            continue
        key = f"{r.index_a}:{r.index_b}"
        lengths = (key, v.outcome, r.metrics_a.tokens, r.metrics_b.tokens)
        rows.append((r.task_type, ((key, v.outcome, v.consistent), lengths)))
    groups = by_task_type(rows)
    return AspectSummary(
        overall=outcome_stats([o for _, (o, _) in rows], resamples=resamples, seed=seed),
        by_task_type={
            tt: outcome_stats([o for o, _ in g], resamples=resamples, seed=seed)
            for tt, g in groups.items()
        },
        length_controlled=length_controlled(
            [lc for _, (_, lc) in rows], resamples=resamples, seed=seed
        ),
        lc_by_task_type={
            tt: length_controlled([lc for _, lc in g], resamples=resamples, seed=seed)
            for tt, g in groups.items()
        },
    )


def comparison_warnings(cmp: Comparison) -> list[str]:
    """What makes a comparison's verdicts meaningless: [] when nothing looks degenerate."""
    out = []
    for aspect in cmp.aspects:
        st = cmp.summary[aspect].overall
        if st.n >= MIN_FOR_RATES and st.counts["tie"] == st.n:
            why = (
                "the judge always preferred the same position, so every verdict flipped when "
                "the order was swapped (order consistency 0%)"
                if st.consistency == 0
                else "the judge never preferred either response"
            )
            out.append(f"{aspect}: all {st.n} pairs are ties: {why}")
        elif st.n >= MIN_FOR_RATES and st.consistency == 0:
            out.append(f"{aspect}: order consistency 0% over {st.n} pairs")
        rationales = [
            o.rationale
            for p in cmp.pairs
            if (v := p.verdicts.get(aspect))
            for o in (v.a_first, v.b_first)
            if o is not None
        ]
        out += rationale_warnings(aspect, rationales)
    return out
