"""Length-controlled win rate, in the style of AlpacaEval 2.

Pairwise judges prefer the longer answer, and a realigned answer is usually longer than its
original, so a raw win rate mixes "better" with "longer". Following AlpacaEval 2 (Dubois et al.
2024), each judged pair's outcome for B is modelled as a logistic function of the two answers'
normalised length difference:

    P(B wins) = sigmoid(theta + beta * tanh(delta / sd(delta))),   delta = tokens_B - tokens_A

fitted on all judged pairs (a tie counts as half a win). The length-controlled win rate is the
model's prediction at zero length difference, sigmoid(theta): how often B would win if both
answers had the same length. Its 95% interval is a percentile bootstrap over records (all the
turns of a record are resampled together, as for the raw rates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from realign.judge.requests import Outcome

# A tiny ridge on both weights keeps the fit finite when every pair has the same outcome (a
# separable sample), without moving an ordinary fit measurably.
RIDGE = 1e-3
NEWTON_STEPS = 25
# Below this many judged units a length model is not worth reporting.
MIN_UNITS = 10
_SCORE: dict[str, float] = {"win": 1.0, "tie": 0.5, "lose": 0.0}


class LengthControlled(BaseModel):
    rate: float  # the win rate at zero length difference
    low: float
    high: float
    length_weight: float  # beta: > 0 when the judge favours B's extra length
    n: int


def _features(len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    delta = len_b.astype(float) - len_a.astype(float)
    sd = float(delta.std())
    return np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted logistic regression of soft labels y on [1, x] by Newton's method:
    (theta, beta)."""
    design = np.stack([np.ones_like(x), x], axis=1)
    coef = np.zeros(2)
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(design @ coef)))
        grad = design.T @ (w * (y - p)) - RIDGE * coef
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + RIDGE * np.eye(2)
        step = np.linalg.solve(hess, grad)
        coef += step
        if float(np.abs(step).max()) < 1e-9:
            break
    return float(coef[0]), float(coef[1])


def _sigmoid(t: float) -> float:
    return float(1.0 / (1.0 + np.exp(-t)))


def length_controlled(
    items: Sequence[tuple[str, Outcome, int, int]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> LengthControlled | None:
    """`items`: (record key, B's outcome, A's tokens, B's tokens) per judged unit. None when
    there are fewer than MIN_UNITS units."""
    if len(items) < MIN_UNITS:
        return None
    keys = [k for k, _, _, _ in items]
    y = np.array([_SCORE[o] for _, o, _, _ in items])
    x = _features(np.array([a for *_, a, _ in items]), np.array([b for *_, b in items]))
    theta, beta = _fit(x, y, np.ones_like(y))
    # Bootstrap over records: a resample's weight of a unit is how often its record was drawn.
    index: dict[str, int] = {}
    record_of = np.array([index.setdefault(k, len(index)) for k in keys])
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(resamples):
        drawn = np.bincount(rng.integers(0, len(index), size=len(index)), minlength=len(index))
        rates.append(_sigmoid(_fit(x, y, drawn[record_of].astype(float))[0]))
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(np.array(rates), [alpha, 1.0 - alpha])
    return LengthControlled(
        rate=_sigmoid(theta), low=float(lo), high=float(hi), length_weight=beta, n=len(items)
    )
