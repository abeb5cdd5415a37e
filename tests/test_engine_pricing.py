"""Price table lookup, user overrides, and the dry-run cost estimate."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from realign.llm.pricing import (
    PriceError,
    StageEstimate,
    estimate,
    load_prices,
    render_table,
)


def test_builtin_table_lookup_by_prefix_and_provider() -> None:
    table = load_prices()
    mini = table.lookup("gpt-4o-mini")
    assert mini is not None and mini.input == 0.15 and mini.output == 0.60
    assert table.lookup("gpt-4o-mini-2024-07-18") == mini  # longest prefix, not gpt-4o
    assert table.lookup("openai/gpt-4o-mini") == mini
    assert table.lookup("some-unknown-model") is None


def test_user_file_overrides_model_by_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("REALIGN_HOME", str(home))
    (home / "prices.yaml").write_text("models:\n  gpt-4o-mini: {input: 1.0, output: 2.0}\n")
    extra = tmp_path / "mine.yaml"
    extra.write_text("models:\n  my-model: {input: 3.0, output: 4.0, batch_discount: 0.0}\n")
    table = load_prices(extra)
    assert table.lookup("gpt-4o-mini").input == 1.0  # type: ignore[union-attr]
    assert table.lookup("my-model").output == 4.0  # type: ignore[union-attr]
    assert table.lookup("gpt-4o").input == 2.5  # type: ignore[union-attr]  # built-in kept


def test_bad_price_file_names_file_and_entry(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {input: -1, output: 2}\n")
    with pytest.raises(PriceError, match=r"bad.yaml: models.m.input"):
        load_prices(bad)
    with pytest.raises(PriceError, match="not found"):
        load_prices(tmp_path / "missing.yaml")


def test_estimate_per_stage_and_total() -> None:
    items = [
        StageEstimate(stage="classify", requests=1000, input_tokens=500_000, output_tokens=50_000),
        StageEstimate(stage="rewrite", requests=800, input_tokens=1_200_000, output_tokens=600_000),
    ]
    report = estimate("gpt-4o-mini", items)
    assert report.total.requests == 1800
    assert report.total.input_tokens == 1_700_000
    # 1.7M * 0.15 + 0.65M * 0.60 = 0.255 + 0.39
    assert report.total.dollars == pytest.approx(0.645)
    assert report.stages[0].dollars == pytest.approx(0.075 + 0.03)
    batch = estimate("gpt-4o-mini", items, batch=True)
    assert batch.total.dollars == pytest.approx(0.3225)


def test_unknown_model_has_no_dollars_and_says_how_to_fix() -> None:
    report = estimate(
        "mystery", [StageEstimate(stage="judge", requests=1, input_tokens=1, output_tokens=1)]
    )
    assert report.total.dollars is None and not report.priced
    out = io.StringIO()
    Console(file=out, width=120).print(render_table(report))
    assert "unknown price" in out.getvalue() and "prices.yaml" in out.getvalue()


def test_rendered_table_lists_stages_and_total() -> None:
    report = estimate(
        "gpt-4o",
        [StageEstimate(stage="classify", requests=10, input_tokens=1000, output_tokens=100)],
    )
    out = io.StringIO()
    Console(file=out, width=120).print(render_table(report))
    text = out.getvalue()
    assert "classify" in text and "total" in text and "gpt-4o" in text and "$0.0035" in text
