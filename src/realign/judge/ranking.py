"""Bradley–Terry ratings of several datasets from their pairwise comparisons.

Each judged unit of a comparison "X against Y" is a game: a win for one side, or a tie that
counts half for each. The Bradley–Terry model gives every dataset a strength s so that
P(X beats Y) = s_X / (s_X + s_Y); it is fitted with Hunter's (2004) minorise-maximise updates.
Ratings are reported on the familiar Elo scale, 1000 + 400 * log10(s), with the geometric mean
of the strengths at 1000: a 100-point gap means the higher one wins 64% of its games against
the other. Intervals are a percentile bootstrap over records, drawn within each comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from realign.judge.requests import Outcome

MM_STEPS = 500
# Every dataset plays one virtual drawn game of this weight against each other dataset it met,
# so a dataset that won (or lost) every game still gets a finite rating.
PRIOR_GAMES = 0.5
_SCORE: dict[str, float] = {"win": 1.0, "tie": 0.5, "lose": 0.0}


class Games(BaseModel):
    """The judged units of one comparison: B's outcome against A for each unit."""

    a: int  # dataset index
    b: int
    keys: list[str]  # the record of each unit (the bootstrap's resampling unit)
    outcomes: list[Outcome]


class Rating(BaseModel):
    name: str
    rating: float
    low: float
    high: float
    games: int
    score: float  # wins + ties / 2


def _fit(wins: np.ndarray, played: np.ndarray) -> np.ndarray:
    """Strengths from a matrix of (fractional) wins[i, j] of i over j and games played[i, j]."""
    n = len(wins)
    met = played > 0
    w = wins + PRIOR_GAMES / 2 * met
    g = played + PRIOR_GAMES * met
    total = w.sum(axis=1)
    s = np.ones(n)
    for _ in range(MM_STEPS):
        denom = (g / (s[:, None] + s[None, :])).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1.0), 1.0)
        new /= np.exp(np.log(new).mean())
        if float(np.abs(new - s).max()) < 1e-10:
            s = new
            break
        s = new
    return s


def _elo(s: np.ndarray) -> np.ndarray:
    return 1000.0 + 400.0 * np.log10(s)


def _tally(
    games: Sequence[Games], n: int, weights: Sequence[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    wins = np.zeros((n, n))
    played = np.zeros((n, n))
    for k, g in enumerate(games):
        score = np.array([_SCORE[o] for o in g.outcomes])
        w = np.ones_like(score) if weights is None else weights[k]
        wins[g.b, g.a] += float((w * score).sum())
        wins[g.a, g.b] += float((w * (1 - score)).sum())
        played[g.a, g.b] += float(w.sum())
        played[g.b, g.a] += float(w.sum())
    return wins, played


def bradley_terry(
    names: Sequence[str],
    games: Sequence[Games],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Rating]:
    """One rating per dataset, best first."""
    n = len(names)
    wins, played = _tally(games, n, None)
    point = _elo(_fit(wins, played))
    rng = np.random.default_rng(seed)
    record_of: list[np.ndarray] = []
    records: list[int] = []
    for g in games:
        index: dict[str, int] = {}
        record_of.append(np.array([index.setdefault(k, len(index)) for k in g.keys], dtype=int))
        records.append(len(index))
    draws = []
    for _ in range(resamples):
        weights = [
            np.bincount(rng.integers(0, r, size=r), minlength=r)[ro].astype(float)
            if r
            else np.zeros(0)
            for ro, r in zip(record_of, records, strict=True)
        ]
        draws.append(_elo(_fit(*_tally(games, n, weights))))
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(np.array(draws), [alpha, 1.0 - alpha], axis=0)
    out = [
        Rating(
            name=names[i],
            rating=float(point[i]),
            low=float(lo[i]),
            high=float(hi[i]),
            games=int(played[i].sum()),
            score=float(wins[i].sum()),
        )
        for i in range(n)
    ]
    return sorted(out, key=lambda r: -r.rating)
