"""Judge comparisons people can trust: the length-controlled win rate, Bradley-Terry ratings of
several datasets, and the judge's cost guard (`--dry-run`, `--max-cost`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from realign.cli.main import app
from realign.judge.lc import MIN_UNITS, length_controlled
from realign.judge.ranking import Games, bradley_terry
from realign.llm.base import ChatRequest
from realign.llm.fake import FakeBackend

# --- length-controlled win rate (synthetic verdicts whose truth is known) -----------------


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _verdicts(
    n: int, *, quality: float, length_bias: float, b_longer_by: int, seed: int
) -> list[tuple[str, Any, int, int]]:
    """A judge whose true preference for B is sigmoid(quality) at equal length, pushed
    towards the longer answer by `length_bias` (on the normalised length difference, as
    AlpacaEval 2 models it); B is `b_longer_by` tokens longer on average. One in ten verdicts
    is a tie."""
    rng = np.random.default_rng(seed)
    la = rng.integers(50, 400, size=n)
    lb = np.maximum(1, la + b_longer_by + rng.integers(-250, 250, size=n))
    delta = (lb - la).astype(float)
    out = []
    for i in range(n):
        p = _sigmoid(quality + length_bias * math.tanh(delta[i] / delta.std()))
        u = rng.random()
        outcome = "tie" if u < 0.1 else ("win" if rng.random() < p else "lose")
        out.append((f"r{i}", outcome, int(la[i]), int(lb[i])))
    return out


def test_a_length_biased_judge_on_equal_quality_pairs_gives_lc_near_half() -> None:
    items = _verdicts(600, quality=0.0, length_bias=3.0, b_longer_by=150, seed=1)
    raw = sum(o == "win" for _, o, _, _ in items) / len(items)
    lc = length_controlled(items, resamples=300)
    assert lc is not None
    assert raw > 0.6  # the judge is fooled by length
    assert lc.low <= 0.5 <= lc.high and abs(lc.rate - 0.5) < 0.08
    assert lc.length_weight > 1.0  # and the model says why


def test_a_real_preference_survives_length_control() -> None:
    # B is better at equal length (sigmoid(1.2) = 77%), and the judge ignores length.
    items = _verdicts(600, quality=1.2, length_bias=0.0, b_longer_by=150, seed=2)
    lc = length_controlled(items, resamples=300)
    assert lc is not None and lc.low > 0.6
    assert abs(lc.length_weight) < 0.6


def test_length_control_needs_enough_pairs_and_is_deterministic() -> None:
    items = _verdicts(MIN_UNITS - 1, quality=0.0, length_bias=0.0, b_longer_by=0, seed=3)
    assert length_controlled(items) is None
    more = _verdicts(40, quality=0.0, length_bias=0.0, b_longer_by=0, seed=3)
    assert length_controlled(more, seed=5) == length_controlled(more, seed=5)
    # every pair won: still a finite rate, near (not past) 1
    won = [(k, "win", a, b) for k, _, a, b in more]
    lc = length_controlled(won, resamples=50)  # type: ignore[arg-type]
    assert lc is not None and 0.9 < lc.rate < 1.0


# --- Bradley-Terry ------------------------------------------------------------------------


def _games(strengths: list[float], n: int, seed: int) -> list[Games]:
    rng = np.random.default_rng(seed)
    out = []
    for a in range(len(strengths)):
        for b in range(a + 1, len(strengths)):
            p = strengths[b] / (strengths[a] + strengths[b])
            outs = ["win" if rng.random() < p else "lose" for _ in range(n)]
            out.append(Games(a=a, b=b, keys=[str(i) for i in range(n)], outcomes=outs))  # type: ignore[arg-type]
    return out


def test_bradley_terry_recovers_known_strengths() -> None:
    truth = [1.0, 2.0, 4.0, 4.0]
    ratings = bradley_terry(["w", "x", "y", "z"], _games(truth, 300, seed=4), resamples=200)
    by = {r.name: r for r in ratings}
    assert [r.name for r in ratings][-2:] == ["x", "w"]  # the two weakest, in order
    gap = 400 * math.log10(2)  # each doubling of strength is ~120 Elo points
    assert abs((by["x"].rating - by["w"].rating) - gap) < 40
    assert abs(by["y"].rating - by["z"].rating) < 50
    for r in ratings:
        assert r.low <= r.rating <= r.high
    assert by["w"].high < by["x"].low  # a real gap shows in the intervals
    assert math.isclose(
        sum(math.log10(10 ** ((r.rating - 1000) / 400)) for r in ratings), 0, abs_tol=1e-6
    )


def test_bradley_terry_with_a_baseline_only_and_a_clean_sweep() -> None:
    games = [
        Games(a=0, b=1, keys=list("abcdefgh"), outcomes=["win"] * 8),
        Games(a=0, b=2, keys=list("abcdefgh"), outcomes=["tie"] * 8),
    ]
    ratings = {r.name: r for r in bradley_terry(["base", "v1", "v2"], games, resamples=50)}
    assert math.isfinite(ratings["v1"].rating)
    assert ratings["v1"].rating > ratings["v2"].rating > ratings["base"].rating - 1
    assert ratings["base"].games == 16 and ratings["v1"].score == 8


# --- the command ----------------------------------------------------------------------------

QUESTIONS = [f"Question number {i}: what is {i} + {i}?" for i in range(12)]


def _dataset(path: Path, answers: list[str]) -> Path:
    rows = [
        {"id": i, "items": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for i, (q, a) in enumerate(zip(QUESTIONS, answers, strict=True))
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _longer_wins(request: ChatRequest) -> str:
    """A judge that prefers the longer response (position-independent)."""
    text = request.messages[-1].content
    a = text.split("<response_a>")[1].split("</response_a>")[0]
    b = text.split("<response_b>")[1].split("</response_b>")[0]
    winner = "tie" if len(a) == len(b) else ("A" if len(a) > len(b) else "B")
    return json.dumps({"rationale": "The longer one is more complete.", "winner": winner})


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    short = _dataset(tmp_path / "short.json", [str(2 * i) for i in range(12)])
    mid = _dataset(tmp_path / "mid.json", [f"It is {2 * i}." for i in range(12)])
    long = _dataset(
        tmp_path / "long.json", [f"Adding {i} and {i} gives {2 * i}, the sum." for i in range(12)]
    )
    return [short, mid, long]


def _use(monkeypatch: pytest.MonkeyPatch, backend: FakeBackend) -> None:
    monkeypatch.setattr("realign.llm.build.make_backend", lambda opts, stderr=None: backend)


def test_judge_three_datasets_rates_each(
    three: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBackend(_longer_wins, model="gpt-4o")
    _use(monkeypatch, fake)
    out, page = tmp_path / "cmp.json", tmp_path / "cmp.html"
    args = ["judge", *map(str, three), "-o", str(out), "--aspects", "readability"]
    res = CliRunner().invoke(app, [*args, "--html", str(page), "--resamples", "200"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["kind"] == "multi_comparison"
    assert len(data["comparisons"]) == 3  # every pair
    assert len(fake.calls) == 3 * 12 * 2  # each pair of units in both orders
    names = [r["name"] for r in data["ratings"]["readability"]]
    assert names == [str(three[2]), str(three[1]), str(three[0])]
    html = page.read_text(encoding="utf-8")
    assert "Bradley–Terry" in html and "length-controlled" in html
    # a pairwise comparison inside carries the length-controlled rate
    lc = data["comparisons"][0]["summary"]["readability"]["length_controlled"]
    assert lc is not None and 0 <= lc["low"] <= lc["rate"] <= lc["high"] <= 1
    # `realign report` redraws it from the JSON
    again = tmp_path / "again.html"
    assert CliRunner().invoke(app, ["report", str(out), "--html", str(again)]).exit_code == 0
    assert "Ratings" in again.read_text(encoding="utf-8")

    # --baseline: each against the first only (no cache, so the calls can be counted)
    fake.calls.clear()
    out2 = tmp_path / "base.json"
    base = ["--baseline", str(three[0]), "--resamples", "100", "--no-cache"]
    res = CliRunner().invoke(
        app, ["judge", *map(str, three), "-o", str(out2), "--aspects", "readability", *base]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out2.read_text(encoding="utf-8"))
    assert data["baseline"] == str(three[0]) and len(data["comparisons"]) == 2
    assert len(fake.calls) == 2 * 12 * 2


def test_judge_pairwise_prints_the_length_controlled_rate(
    three: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, FakeBackend(_longer_wins, model="gpt-4o"))
    out = tmp_path / "cmp.json"
    res = CliRunner(env={"COLUMNS": "200"}).invoke(
        app,
        ["judge", str(three[0]), str(three[2]), "-o", str(out), "--aspects", "readability"],
    )
    assert res.exit_code == 0, res.output
    assert "B better at equal length" in " ".join(res.output.split())
    summary = json.loads(out.read_text(encoding="utf-8"))["summary"]["readability"]
    assert summary["overall"]["win"]["rate"] == 1.0  # B is always longer and always wins
    lc = summary["length_controlled"]
    assert lc["n"] == 12 and lc["low"] <= lc["rate"] <= lc["high"]


def test_baseline_must_be_an_input_and_needs_three(three: list[Path], tmp_path: Path) -> None:
    out = str(tmp_path / "o.json")
    r = CliRunner().invoke(
        app, ["judge", *map(str, three[:2]), "-o", out, "--baseline", str(three[0])]
    )
    assert r.exit_code == 2 and "--baseline needs three or more inputs" in r.output
    r = CliRunner().invoke(
        app, ["judge", *map(str, three), "-o", out, "--baseline", str(tmp_path / "x.json")]
    )
    assert r.exit_code == 2 and "not one of the inputs" in r.output


def test_judge_dry_run_sends_nothing_and_prices(
    three: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeBackend(_longer_wins, model="gpt-4o")
    _use(monkeypatch, fake)
    out = tmp_path / "cmp.json"
    # a user with a key: the judge would run on its default hosted model
    res = CliRunner(env={"COLUMNS": "200", "OPENAI_API_KEY": "sk-test"}).invoke(
        app, ["judge", str(three[0]), str(three[1]), "-o", str(out), "--dry-run"]
    )
    assert res.exit_code == 0, res.output
    assert fake.calls == [] and not out.exists()
    assert "no request was sent" in res.output
    # 12 pairs x 3 aspects x 2 orders, priced for the judge's default model
    assert "72" in res.output and "Estimated cost for gpt-4o" in res.output
    assert "$" in res.output


def test_judge_max_cost_stops_cleanly_and_resumes(
    three: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp.json"
    argv = ["judge", str(three[0]), str(three[1]), "-o", str(out), "--aspects", "readability"]
    first = FakeBackend(_longer_wins, model="gpt-4o")
    _use(monkeypatch, first)
    res = CliRunner().invoke(app, [*argv, "--max-cost", "0.02", "--concurrency", "1"])
    assert res.exit_code == 3, res.output
    assert "--max-cost" in res.output and "rerun the same command to resume" in res.output
    assert 0 < len(first.calls) < 24 and not out.exists()
    rest = FakeBackend(_longer_wins, model="gpt-4o")
    _use(monkeypatch, rest)
    res = CliRunner().invoke(app, [*argv, "--max-cost", "5"])
    assert res.exit_code == 0, res.output
    assert len(rest.calls) == 24 - len(first.calls)  # nothing paid for twice
