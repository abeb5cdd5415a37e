"""Statistics of judged units (bootstrap CIs per record) and the signs of a degenerate judge."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel

from realign import metrics
from realign.judge.requests import Outcome
from realign.judge.units import UNKNOWN_TASK

T = TypeVar("T")

# --- statistics ---------------------------------------------------------------------------


class RateCI(BaseModel):
    rate: float
    low: float
    high: float


class OutcomeStats(BaseModel):
    n: int  # judged units
    records: int  # the resampling unit of the bootstrap
    counts: dict[Outcome, int]
    win: RateCI
    tie: RateCI
    lose: RateCI
    consistency: float  # share of units where both orders named the same side (or both tie)


class ScoreStats(BaseModel):
    n: int
    mean: float
    low: float
    high: float
    histogram: list[int]  # counts of scores 1..10


def _rate_ci(num: list[float], den: list[float], resamples: int, seed: int) -> RateCI:
    ci = metrics.bootstrap_ci(num, den, resamples=resamples, seed=seed)
    lo, hi = ci if ci else (0.0, 0.0)
    total = sum(den)
    return RateCI(rate=sum(num) / total if total else 0.0, low=lo, high=hi)


def outcome_stats(
    items: Sequence[tuple[str, Outcome, bool]], *, resamples: int = 1000, seed: int = 0
) -> OutcomeStats:
    """`items`: (record key, outcome, order-consistent) per judged unit."""
    per_record: dict[str, dict[str, int]] = defaultdict(
        lambda: {"win": 0, "tie": 0, "lose": 0, "n": 0}
    )
    for key, outcome, _ in items:
        per_record[key][outcome] += 1
        per_record[key]["n"] += 1
    rows = list(per_record.values())
    den = [float(r["n"]) for r in rows]
    rates = {
        o: _rate_ci([float(r[o]) for r in rows], den, resamples, seed)
        for o in ("win", "tie", "lose")
    }
    return OutcomeStats(
        n=len(items),
        records=len(rows),
        counts={o: sum(r[o] for r in rows) for o in ("win", "tie", "lose")},  # type: ignore[misc]
        consistency=sum(c for _, _, c in items) / len(items) if items else 0.0,
        **rates,
    )


def score_stats(
    items: Sequence[tuple[str, int]], *, resamples: int = 1000, seed: int = 0
) -> ScoreStats:
    """`items`: (record key, score) per judged unit."""
    per_record: dict[str, list[int]] = defaultdict(list)
    for key, s in items:
        per_record[key].append(s)
    num = [float(sum(v)) for v in per_record.values()]
    den = [float(len(v)) for v in per_record.values()]
    ci = metrics.bootstrap_ci(num, den, resamples=resamples, seed=seed) or (0.0, 0.0)
    hist = [0] * 10
    for _, s in items:
        hist[s - 1] += 1
    return ScoreStats(
        n=len(items),
        mean=sum(num) / sum(den) if den else 0.0,
        low=ci[0],
        high=ci[1],
        histogram=hist,
    )


def by_task_type(items: Sequence[tuple[str | None, T]]) -> dict[str, list[T]]:
    """Items grouped by task type, the largest group first."""
    groups: dict[str, list[T]] = defaultdict(list)
    for tt, item in items:
        groups[tt or UNKNOWN_TASK].append(item)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


# --- degenerate judges --------------------------------------------------------------------
#
# A model too weak to judge (SmolLM2-135M, say) still returns schema-valid JSON: a tie or a
# constant score every time, and rationales such as "][" or a copy of the prompt. Its figures
# would be reported like any others, so they are checked here and flagged in the output
# (`judge_warnings`) and by the CLI.

MIN_FOR_RATES = 5  # judged units before all-tie / never-consistent / one-score can be flagged
DEGENERATE_SHARE = 0.5  # this share of empty / echoed rationales flags the aspect
SAME_RATIONALE_SHARE = 0.8  # this share of one repeated rationale flags the aspect
_WORD = re.compile(r"[^\W\d_]{2,}")  # a word of at least two letters
_PROMPT_TAGS = re.compile(r"</?(?:response(?:_[ab])?|request|rubric|context|reference)>")


def rationale_problem(text: str) -> str | None:
    """Why a rationale says nothing ('no words', 'copies the prompt'), else None."""
    if not _WORD.search(text):
        return "no words"
    if _PROMPT_TAGS.search(text):
        return "copies the prompt"
    return None


def rationale_warnings(aspect: str, rationales: Sequence[str]) -> list[str]:
    n = len(rationales)
    if n == 0:
        return []
    out = []
    bad = [(r, why) for r in rationales if (why := rationale_problem(r))]
    if len(bad) >= DEGENERATE_SHARE * n:
        example = bad[0][0].strip()[:40]
        out.append(
            f"{aspect}: {len(bad)} of {n} rationales are empty or not an assessment "
            f"({bad[0][1]}, e.g. {example!r})"
        )
    if n >= 3:
        text, count = Counter(" ".join(r.split()).lower() for r in rationales).most_common(1)[0]
        if count >= SAME_RATIONALE_SHARE * n:
            out.append(f"{aspect}: {count} of {n} rationales are the same text ({text[:40]!r})")
    return out


def unfit_message(model: str, warnings: Sequence[str]) -> str:
    """The one-paragraph verdict on a judge whose output is degenerate."""
    return (
        f"The judge model {model} looks unfit for judging: its verdicts are degenerate, so the "
        "figures above measure the model, not the responses ("
        + "; ".join(warnings)
        + "). Judge with a stronger model (--model, --base-url)."
    )
