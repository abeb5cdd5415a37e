"""The report as a person reads it in a browser: interval whiskers that leave the percentages
readable, a length histogram with axis titles and ticks, no rows that do not apply, the whole
window's width, the `#responses` anchor, records and responses counted side by side.

The browser checks run the page in headless Chromium and read the layout back through a small
script (`probe`): headless `--screenshot` paints nothing once a page is scrolled (even a bare
page with an anchor), so geometry, not pixels, is what these tests compare."""

from __future__ import annotations

import html as htmllib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_report import _chromium, rec

from realign import metrics, report
from realign.judge.stats import OutcomeStats, RateCI
from realign.records import FilterDecision, RealignMeta, Record, Turn, UnitMeta
from realign.report.blocks import metrics_table
from realign.report.svg import svg_histogram, svg_outcome_bars, token_bins

PROBE = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var out = (function () { %s })();
  document.body.setAttribute("data-probe", JSON.stringify(out));
}, 300); });
</script></body>"""


def probe(page_html: str, js: str, tmp_path: Path, *, anchor: str = "", size: str = "1280,1600") -> Any:
    """Load the page in headless Chromium at `size`, run `js` (a function body returning
    JSON-able data) once it has loaded and settled, and return what it returned."""
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    page = tmp_path / "probe.html"
    page.write_text(page_html.replace("</body>", PROBE % js, 1), encoding="utf-8")
    res = subprocess.run(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={size}",
            "--virtual-time-budget=5000", "--dump-dom", page.as_uri() + anchor,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert m, "the probe did not run"
    return json.loads(htmllib.unescape(m.group(1)))


def page_of(*svgs: str) -> str:
    return "<!DOCTYPE html><html><body>" + "".join(svgs) + "</body></html>"


def stats(win: float, tie: float, low: float, high: float, n: int = 40) -> OutcomeStats:
    lose = 1 - win - tie
    return OutcomeStats(
        n=n,
        records=n,
        counts={"win": int(win * n), "tie": int(tie * n), "lose": int(lose * n)},
        win=RateCI(rate=win, low=low, high=high),
        tie=RateCI(rate=tie, low=tie, high=tie),
        lose=RateCI(rate=lose, low=lose, high=lose),
        consistency=1.0,
    )


OVERLAPS = """
  function box(e) { var r = e.getBoundingClientRect();
    return {l: r.left, r: r.right, t: r.top, b: r.bottom}; }
  function meet(a, b) { return a.l < b.r && b.l < a.r && a.t < b.b && b.t < a.b; }
  var labels = Array.prototype.map.call(document.querySelectorAll("text.share"), box);
  var whiskers = Array.prototype.map.call(document.querySelectorAll("path.interval"), box);
  var hits = 0;
  labels.forEach(function (a) { whiskers.forEach(function (w) { if (meet(a, w)) hits++; }); });
  return {labels: labels.length, whiskers: whiskers.length, hits: hits};
"""


@pytest.mark.chromium
def test_interval_whiskers_leave_the_percentages_readable(tmp_path: Path) -> None:
    # Wide intervals that span the tie and loss labels, as small judged sets have.
    rows = [
        ("open_qa", stats(0.5, 0.2, 0.3, 0.7)),
        ("math_puzzles", stats(0.4, 0.3, 0.1, 0.9)),
        ("all", stats(0.45, 0.25, 0.35, 0.55)),
    ]
    got = probe(page_of(svg_outcome_bars(rows, "outcomes")), OVERLAPS, tmp_path)
    assert got["labels"] == 9 and got["whiskers"] == 3
    assert got["hits"] == 0


TEXTS_INSIDE = """
  var svg = document.querySelector("svg").getBoundingClientRect();
  var out = {outside: [], titles: [], ticks: []};
  document.querySelectorAll("svg text").forEach(function (t) {
    var r = t.getBoundingClientRect();
    if (r.left < svg.left - 0.5 || r.right > svg.right + 0.5 || r.top < svg.top - 0.5
        || r.bottom > svg.bottom + 0.5) out.outside.push(t.textContent);
    if (t.classList.contains("axis-title")) out.titles.push(t.textContent);
    if (t.classList.contains("tick")) out.ticks.push(t.textContent);
  });
  return out;
"""


@pytest.mark.chromium
@pytest.mark.parametrize("top", [140, 4000])  # short labels, and long ones that are turned
def test_length_histogram_has_axis_titles_and_ticks_inside_the_chart(
    tmp_path: Path, top: int
) -> None:
    original = list(range(0, top, max(1, top // 50)))
    final = [v + top // 10 for v in original]
    labels, counts = token_bins([original, final])
    svg = svg_histogram(labels, [("original", counts[0]), ("final", counts[1])], "length")
    got = probe(page_of(svg), TEXTS_INSIDE, tmp_path)
    assert got["outside"] == []
    assert sorted(got["titles"]) == ["responses", "tokens per response"]
    assert labels[0] in got["ticks"] and labels[-1] in got["ticks"]  # x: every bin's range
    y_ticks = [int(t) for t in got["ticks"] if t.isdigit()]
    assert 0 in y_ticks and max(y_ticks) >= max(max(c) for c in counts)  # y: 0 to the peak


def test_token_bins_label_each_bin_with_its_range() -> None:
    labels, counts = token_bins([[0, 5, 49, 50, 130]], bins=3)
    assert labels == ["0–43", "44–87", "88–131"]
    assert counts == [[2, 2, 1]]


def summary(**kw: Any) -> metrics.MetricsSummary:
    return metrics.summarize(
        [metrics.response_metrics("The answer is 42.", kw.get("ref"), kw.get("task"), "q")]
    )


def test_metric_rows_that_apply_to_nothing_are_hidden() -> None:
    plain = metrics_table([("original", summary()), ("final", summary())], "side by side")
    names = [r[0] for r in plain.rows]
    assert "contains a gold answer" not in names and "math final answer matches" not in names
    assert "mean tokens" in names and plain.note == ""

    with_ref = metrics_table([("A", summary(ref="42")), ("B", summary())], "side by side")
    assert "contains a gold answer" in [r[0] for r in with_ref.rows] and with_ref.note


def run_records() -> list[Record]:
    """Two records, one with two assistant turns: 2 records, 3 responses."""
    one = rec("r1", "Capital of France?", "Paris.")
    one.meta = RealignMeta(
        status="kept",
        task_type="open_qa",
        units=[
            UnitMeta(
                turn=1, task_type="open_qa", status="kept", original="Paris.",
                filter=FilterDecision(keep_original=True, rule="length_ratio"),
            )
        ],
    )  # fmt: skip
    two = Record(
        id="r2",
        index=1,
        source_format="items",
        turns=[
            Turn(role="user", content="Hi"),
            Turn(role="assistant", content="**Hello.**"),
            Turn(role="user", content="And 2+2?"),
            Turn(role="assistant", content="4"),
        ],
        meta=RealignMeta(
            status="rewritten",
            task_type="chitchat",
            units=[
                UnitMeta(turn=1, task_type="chitchat", status="rewritten", original="Hello."),
                UnitMeta(turn=3, task_type="math_puzzles", status="skipped"),
            ],
        ),
    )
    return [one, two]


def test_run_report_shows_records_and_responses_side_by_side() -> None:
    view = report.run_view(run_records(), source="out.jsonl")
    cards = dict(view.cards)
    assert cards["records"] == "2" and cards["responses (assistant turns)"] == "3"
    (status,) = [t for t in view.sections[0].tables if t.caption == "Status"]
    assert status.header == ["status", "records", "responses"]
    assert {r[0]: r[1:] for r in status.rows} == {
        "rewritten": ["1", "1"],
        "kept": ["1", "1"],
        "skipped": ["0", "1"],
    }
    assert ("records", "2") in view.meta and ("responses", "3") in view.meta


LAYOUT = """
  var main = document.querySelector("main").getBoundingClientRect();
  var resp = document.getElementById("responses").getBoundingClientRect();
  var mid = document.elementFromPoint(window.innerWidth / 2, window.innerHeight / 2);
  return {main: main.width, window: document.documentElement.clientWidth,
          scrolled: window.scrollY, top: resp.top, height: resp.height,
          inside: !!(mid && mid.closest("#responses"))};
"""


def many_rows_page() -> str:
    records = [rec(f"r{i}", f"Question {i}?", f"Answer {i}. " * 40, index=i) for i in range(40)]
    return report.render_html(report.run_view(records, source="many.jsonl"))


@pytest.mark.chromium
def test_layout_uses_the_window_width(tmp_path: Path) -> None:
    got = probe(many_rows_page(), LAYOUT, tmp_path, size="1920,1200")
    assert got["main"] >= got["window"] - 1  # no fixed maximum: the sections span the window
    assert got["window"] > 1800


@pytest.mark.chromium
def test_responses_anchor_shows_the_responses(tmp_path: Path) -> None:
    page = many_rows_page()
    assert '<a href="#responses">' in page  # the header links to it
    got = probe(page, LAYOUT, tmp_path, anchor="#responses")
    assert got["scrolled"] > 0 and abs(got["top"]) < 2  # the section at the top of the window
    assert got["height"] > 1000 and got["inside"]  # and what fills the window is its rows


def test_run_summary_labels_records_and_says_how_many_task_types_are_left_out() -> None:
    from collections import Counter

    from realign.cli.run_impl import TASK_TYPES_SHOWN, top_counts

    counts = Counter({f"type_{i}": 20 - i for i in range(TASK_TYPES_SHOWN + 3)})
    line = top_counts(counts, TASK_TYPES_SHOWN)
    assert line.startswith("type_0 20, type_1 19") and line.endswith("+3 more (33)")  # 12 + 11 + 10 records
    assert top_counts(Counter({"a": 2}), TASK_TYPES_SHOWN) == "a 2"
