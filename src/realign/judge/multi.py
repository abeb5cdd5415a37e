"""More than two datasets: every pair compared (or each against a baseline), then one
Bradley–Terry rating per dataset and aspect from all the comparisons together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations
from typing import Any, Literal

from pydantic import BaseModel, Field

from realign.judge.pairwise import Comparison, judge_pairwise
from realign.judge.ranking import Games, Rating, bradley_terry
from realign.llm.engine import Engine
from realign.records import Record

RATING_NOTE = (
    "Bradley–Terry ratings on the Elo scale (geometric mean 1000): a 100-point gap means the "
    "higher-rated dataset wins 64% of its judged pairs against the other, a tie counting half."
)


class MultiComparison(BaseModel):
    kind: Literal["multi_comparison"] = "multi_comparison"
    datasets: list[str]
    baseline: str | None  # each dataset was compared with this one; None: every pair
    model: str
    backend: str
    aspects: list[str]
    resamples: int
    seed: int
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    note: str = RATING_NOTE
    ratings: dict[str, list[Rating]]  # per aspect, best first
    comparisons: list[Comparison]
    read_errors: list[str] = Field(default_factory=list)
    judge_warnings: list[str] = Field(default_factory=list)

    @property
    def failures(self) -> list[Any]:
        return [f for c in self.comparisons for f in c.failures]


def pairings(n: int, baseline: int | None) -> list[tuple[int, int]]:
    """Which datasets are compared: (A, B) index pairs, each pair once."""
    if baseline is None:
        return list(combinations(range(n), 2))
    return [(baseline, i) for i in range(n) if i != baseline]


def games_of(cmp: Comparison, a: int, b: int, aspect: str) -> Games:
    judged = [
        (f"{p.index_a}:{p.index_b}", v.outcome)
        for p in cmp.pairs
        if (v := p.verdicts.get(aspect)) is not None and v.outcome is not None
    ]
    return Games(a=a, b=b, keys=[k for k, _ in judged], outcomes=[o for _, o in judged])


async def judge_many(
    engine: Engine,
    datasets: Sequence[tuple[str, Sequence[Record]]],
    aspects: Sequence[str],
    *,
    baseline: int | None = None,
    resamples: int = 1000,
    seed: int = 0,
    **pairwise: Any,
) -> MultiComparison:
    """`pairwise` is passed on to each `judge_pairwise` (pack, references, progress, …)."""
    names = [n for n, _ in datasets]
    comparisons: list[tuple[int, int, Comparison]] = []
    for a, b in pairings(len(datasets), baseline):
        cmp = await judge_pairwise(
            engine,
            datasets[a][1],
            datasets[b][1],
            aspects,
            names=(names[a], names[b]),
            resamples=resamples,
            seed=seed,
            **pairwise,
        )
        comparisons.append((a, b, cmp))
    ratings = {
        aspect: bradley_terry(
            names,
            [games_of(c, a, b, aspect) for a, b, c in comparisons],
            resamples=resamples,
            seed=seed,
        )
        for aspect in aspects
    }
    return MultiComparison(
        datasets=names,
        baseline=names[baseline] if baseline is not None else None,
        model=engine.backend.model,
        backend=engine.backend.backend_id,
        aspects=list(aspects),
        resamples=resamples,
        seed=seed,
        ratings=ratings,
        comparisons=[c for _, _, c in comparisons],
        judge_warnings=[
            f"{c.b} vs {c.a}: {w}" for _, _, c in comparisons for w in c.judge_warnings
        ],
    )
