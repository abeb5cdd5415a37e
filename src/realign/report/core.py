"""One self-contained HTML report: summary tables, inline SVG charts, a side-by-side diff view.

Three sources give the same kind of page: a pairwise `Comparison`, pointwise `ScoresReport`,
or the records of a `realign run` output (original vs realigned, no judging). Each is first
turned into a neutral `ReportView` by a pure function, then rendered by one Jinja2 template
(`templates/report.html.j2`) with autoescaping on. The page loads nothing from the network:
CSS, JavaScript and SVG are inline, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import difflib
import html
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources

import jinja2
from markupsafe import Markup, escape
from pydantic import BaseModel, Field

from realign import metrics
from realign.judge import (
    UNKNOWN_TASK,
    Comparison,
    OutcomeStats,
    ReferenceIndex,
    ScoresReport,
    unfit_message,
    units_of,
)
from realign.records import Record

MAX_ROWS = 5000  # diff rows in one page; statistics always cover everything
WIN, TIE, LOSE = "#2e7d32", "#9e9e9e", "#c62828"
SERIES = ("#1565c0", "#ef6c00")


# --- the neutral view ---------------------------------------------------------------------


class TableView(BaseModel):
    caption: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


class ChartView(BaseModel):
    title: str
    svg: str  # generated here, trusted


class SectionView(BaseModel):
    title: str
    notes: list[str] = Field(default_factory=list)
    tables: list[TableView] = Field(default_factory=list)
    charts: list[ChartView] = Field(default_factory=list)
    details: list[tuple[str, list[str]]] = Field(default_factory=list)  # collapsible lists


class NoteView(BaseModel):
    label: str
    text: str
    tone: str = ""  # "win" | "lose" | "tie" | "" (colour of the label)


class RowView(BaseModel):
    key: str
    task_type: str
    tags: list[str]  # shown as chips and offered in the tag filter
    instruction: str
    left_label: str
    right_label: str
    left_html: str  # escaped diff markup
    right_html: str
    notes: list[NoteView] = Field(default_factory=list)
    changed: bool = True


class ReportView(BaseModel):
    title: str
    subtitle: str
    meta: list[tuple[str, str]]
    cards: list[tuple[str, str]]  # headline numbers
    sections: list[SectionView]
    rows: list[RowView]
    total_rows: int
    generated: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def task_types(self) -> list[str]:
        return sorted({r.task_type for r in self.rows})

    @property
    def tags(self) -> list[str]:
        return sorted({t for r in self.rows for t in r.tags})


# --- word-level diff ----------------------------------------------------------------------

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
_MAX_DIFF_TOKENS = 6000  # beyond this, diff lines instead of words (SequenceMatcher is quadratic)


def word_diff(old: str, new: str) -> tuple[str, str]:
    """(old, new) as escaped HTML, deletions in <del> on the left, insertions in <ins> right."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    if len(a) > _MAX_DIFF_TOKENS or len(b) > _MAX_DIFF_TOKENS:
        a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old_part, new_part = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old_part)
            right.append(new_part)
            continue
        if old_part:
            left.append(f"<del>{old_part}</del>")
        if new_part:
            right.append(f"<ins>{new_part}</ins>")
    return "".join(left), "".join(right)


# --- SVG charts ---------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _label_width(labels: Iterable[str]) -> int:
    """Room for the longest left-hand label (about 7 px per character at 12 px)."""
    return max(120, min(360, 7 * max((len(s) for s in labels), default=0) + 12))


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(label)}" '
        f'font-family="system-ui,sans-serif" font-size="12">' + "".join(body) + "</svg>"
    )


def svg_outcome_bars(rows: Sequence[tuple[str, OutcomeStats]], label: str) -> str:
    """Horizontal 100% bars: B wins | ties | A wins, with the 95% interval of B's win rate."""
    lw, bw, rh = _label_width(f"{name} (n={st.n})" for name, st in rows), 420, 26
    width, height = lw + bw + 20, 30 + rh * len(rows) + 10
    body = [
        f'<text x="{lw}" y="14" fill="{WIN}">■ B better</text>',
        f'<text x="{lw + 90}" y="14" fill="{TIE}">■ tie</text>',
        f'<text x="{lw + 140}" y="14" fill="{LOSE}">■ A better</text>',
        f'<text x="{lw + 230}" y="14" fill="#333">├┤ 95% interval of B\'s win rate</text>',
    ]
    for k, (name, st) in enumerate(rows):
        y = 24 + k * rh
        body.append(
            f'<text x="{lw - 6}" y="{y + 15}" text-anchor="end">{html.escape(name)} (n={st.n})</text>'
        )
        x = float(lw)
        for rate, colour, what in (
            (st.win.rate, WIN, "B better"),
            (st.tie.rate, TIE, "tie"),
            (st.lose.rate, LOSE, "A better"),
        ):
            w = bw * rate
            if w > 0:
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{rh - 6}" fill="{colour}">'
                    f"<title>{html.escape(name)}: {what} {_pct(rate)}</title></rect>"
                )
                if w > 28:
                    body.append(
                        f'<text x="{x + w / 2:.1f}" y="{y + 14}" text-anchor="middle" fill="#fff">{_pct(rate)}</text>'
                    )
            x += w
        lo, hi = lw + bw * st.win.low, lw + bw * st.win.high
        cy = y + (rh - 6) / 2
        body.append(
            f'<path d="M{lo:.1f},{cy - 6:.1f}v12M{lo:.1f},{cy:.1f}H{hi:.1f}M{hi:.1f},{cy - 6:.1f}v12" '
            'stroke="#000" stroke-width="1.5" fill="none"/>'
        )
    return _svg(width, height, body, label)


def svg_histogram(
    labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], label: str
) -> str:
    """Grouped vertical bars: one group per label, one bar per series (≤ 2 series)."""
    n, s = len(labels), max(1, len(series))
    gw = max(18, min(48, 560 // max(n, 1)))
    bw = (gw - 4) / s
    ch, top, left = 150, 24, 36
    width, height = left + gw * n + 10, top + ch + 36
    peak = max([max(v, default=0) for _, v in series] + [1])
    body = [f'<line x1="{left}" y1="{top + ch}" x2="{width - 6}" y2="{top + ch}" stroke="#999"/>']
    for si, (name, _) in enumerate(series):
        body.append(
            f'<text x="{left + si * 130}" y="14" fill="{SERIES[si % 2]}">■ {html.escape(name)}</text>'
        )
    body.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="#666">{peak}</text>')
    for i, lab in enumerate(labels):
        gx = left + i * gw + 2
        for si, (name, values) in enumerate(series):
            v = values[i] if i < len(values) else 0
            h = ch * v / peak
            body.append(
                f'<rect x="{gx + si * bw:.1f}" y="{top + ch - h:.1f}" width="{bw - 1:.1f}" '
                f'height="{h:.1f}" fill="{SERIES[si % 2]}"><title>{html.escape(name)}, '
                f"{html.escape(lab)}: {v}</title></rect>"
            )
        body.append(
            f'<text x="{gx + gw / 2 - 2:.1f}" y="{top + ch + 14}" text-anchor="middle" '
            f'font-size="10">{html.escape(lab)}</text>'
        )
    return _svg(width, height, body, label)


def svg_count_bars(rows: Sequence[tuple[str, int]], label: str, colour: str = SERIES[0]) -> str:
    lw, bw, rh = _label_width(name for name, _ in rows), 380, 22
    peak = max([v for _, v in rows] + [1])
    body = []
    for k, (name, v) in enumerate(rows):
        y = 6 + k * rh
        w = bw * v / peak
        body.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end">{html.escape(name)}</text>')
        body.append(f'<rect x="{lw}" y="{y}" width="{w:.1f}" height="{rh - 6}" fill="{colour}"/>')
        body.append(f'<text x="{lw + w + 4:.1f}" y="{y + 13}">{v}</text>')
    return _svg(lw + bw + 60, 12 + rh * len(rows), body, label)


def svg_share_bars(
    rows: Sequence[tuple[str, int, int]], label: str, colour: str = SERIES[0]
) -> str:
    """Horizontal bars of a share (part of whole, 0–100%), labelled `40% (2/5)`: a task type
    with 2 of 5 responses rewritten must not look smaller than one with 3 of 300."""
    lw, bw, rh = _label_width(name for name, _, _ in rows), 380, 22
    body = [
        f'<line x1="{lw + bw}" y1="0" x2="{lw + bw}" y2="{6 + rh * len(rows)}" '
        'stroke="#ccc" stroke-dasharray="3,3"/>'  # the 100% mark
    ]
    for k, (name, part, whole) in enumerate(rows):
        y = 6 + k * rh
        share = part / whole if whole else 0.0
        w = bw * share
        text = f"{_pct(share)} ({part}/{whole})"
        body.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end">{html.escape(name)}</text>')
        body.append(
            f'<rect x="{lw}" y="{y}" width="{w:.1f}" height="{rh - 6}" fill="{colour}">'
            f"<title>{html.escape(name)}: {text}</title></rect>"
        )
        body.append(f'<text x="{lw + w + 4:.1f}" y="{y + 13}">{text}</text>')
    return _svg(lw + bw + 110, 12 + rh * len(rows), body, label)


def _token_bins(
    values_by_series: Sequence[Sequence[int]], bins: int = 12
) -> tuple[list[str], list[list[int]]]:
    allv = [v for vs in values_by_series for v in vs] or [0]
    hi = max(allv) + 1
    step = max(1, -(-hi // bins))
    labels = [f"{k * step}–" for k in range(-(-hi // step))]
    counts = []
    for vs in values_by_series:
        c = [0] * len(labels)
        for v in vs:
            c[min(v // step, len(labels) - 1)] += 1
        counts.append(c)
    return labels, counts


# --- shared pieces ------------------------------------------------------------------------


def _ci(st: OutcomeStats, which: str) -> str:
    r = getattr(st, which)
    return f"{_pct(r.rate)} [{_pct(r.low)}–{_pct(r.high)}]"


def _opt_pct(x: float | None) -> str:
    return "—" if x is None else _pct(x)


def metrics_table(columns: Sequence[tuple[str, metrics.MetricsSummary]], caption: str) -> TableView:
    def row(name: str, fn: object) -> list[str]:
        return [name, *(fn(m) for _, m in columns)]  # type: ignore[operator]

    rows = [
        row("responses", lambda m: str(m.n)),
        row(
            "contains a gold answer",
            lambda m: f"{_opt_pct(m.containment_rate)} of {m.with_reference}",
        ),
        row(
            "math final answer matches",
            lambda m: f"{_opt_pct(m.answer_match_rate)} of {m.math_items}",
        ),
        row("mean tokens", lambda m: f"{m.mean_tokens:.0f}"),
        row("median tokens", lambda m: f"{m.median_tokens:.0f}"),
        row("with a list", lambda m: _pct(m.share_with_list)),
        row("with headings", lambda m: _pct(m.share_with_heading)),
        row("with bold text", lambda m: _pct(m.share_with_bold)),
        row("with code blocks", lambda m: _pct(m.share_with_code)),
        row("mean paragraphs", lambda m: f"{m.mean_paragraphs:.1f}"),
    ]
    return TableView(
        caption=caption,
        header=["metric", *(n for n, _ in columns)],
        rows=rows,
        note="Containment: a normalised gold answer (lowercase, no punctuation or articles) "
        "occurs in the response, every line of it when the reference is a list answer; '—' "
        "when no reference was given.",
    )


def _metric_note(m: metrics.ResponseMetrics) -> str:
    parts = [f"{m.tokens} tokens"]
    if m.contains_answer is not None and m.answer_lines == "all":
        parts.append(  # a list answer: every line is needed
            "contains every gold answer of the list"
            if m.contains_answer
            else f"only {m.answers_found} gold answers of the list"
        )
    elif m.contains_answer is not None:
        parts.append("contains gold answer" if m.contains_answer else "no gold answer")
    if m.answer_match is not None:
        parts.append("final answer matches" if m.answer_match else "final answer differs")
    return ", ".join(parts)


def _filter_note(status: str | None, reason: str, flt: object) -> NoteView | None:
    if status is None and flt is None:
        return None
    text = status or ""
    if reason:
        text += f": {reason}"
    if flt is not None:
        keep = "kept the original" if flt.keep_original else "accepted the rewrite"  # type: ignore[attr-defined]
        text += f" — filter {keep} (rule {flt.rule}{': ' + flt.reason if flt.reason else ''})"  # type: ignore[attr-defined]
    return NoteView(label="realign", text=text.strip(" :"))


# --- comparison ---------------------------------------------------------------------------

_OUTCOME_TAG = {"win": "B better", "tie": "tie", "lose": "A better"}
_TONE = {"win": "win", "tie": "tie", "lose": "lose"}


def comparison_view(cmp: Comparison, max_rows: int = MAX_ROWS) -> ReportView:
    cards = [("pairs judged", str(len(cmp.pairs)))]
    for aspect in cmp.aspects:
        st = cmp.summary[aspect].overall
        cards.append((f"{aspect}: B better", _ci(st, "win")))
    for name, m in (("A", cmp.metrics_a), ("B", cmp.metrics_b)):
        if m.containment_rate is not None:
            cards.append((f"{name} contains gold answer", _pct(m.containment_rate)))

    aspect_rows = [(a, cmp.summary[a].overall) for a in cmp.aspects]
    summary_table = TableView(
        caption="Judge verdicts (B against A)",
        header=["aspect", "n", "B better [95% CI]", "tie", "A better [95% CI]", "order-consistent"],
        rows=[
            [a, str(st.n), _ci(st, "win"), _pct(st.tie.rate), _ci(st, "lose"), _pct(st.consistency)]
            for a, st in aspect_rows
        ],
        note=cmp.convention + f" Intervals: percentile bootstrap over records, "
        f"{cmp.resamples} resamples, seed {cmp.seed}.",
    )
    by_type = SectionView(title="By task type")
    for aspect in cmp.aspects:
        groups = cmp.summary[aspect].by_task_type
        by_type.tables.append(
            TableView(
                caption=aspect,
                header=["task type", "n", "B better [95% CI]", "tie", "A better [95% CI]"],
                rows=[
                    [tt, str(st.n), _ci(st, "win"), _pct(st.tie.rate), _ci(st, "lose")]
                    for tt, st in groups.items()
                ],
            )
        )
        by_type.charts.append(
            ChartView(
                title=f"{aspect} by task type",
                svg=svg_outcome_bars(list(groups.items()), f"{aspect} outcomes by task type"),
            )
        )
    labels, counts = _token_bins(
        [[p.metrics_a.tokens for p in cmp.pairs], [p.metrics_b.tokens for p in cmp.pairs]]
    )
    sections = [
        *_warning_sections(cmp.model, cmp.judge_warnings),
        SectionView(
            title="Summary",
            tables=[summary_table],
            charts=[
                ChartView(
                    title="Outcome per aspect",
                    svg=svg_outcome_bars(aspect_rows, "outcome per aspect"),
                )
            ],
        ),
        SectionView(
            title="Reference metrics (no LLM)",
            tables=[
                metrics_table([("A", cmp.metrics_a), ("B", cmp.metrics_b)], "A and B side by side")
            ],
            charts=[
                ChartView(
                    title="Response length (tokens)",
                    svg=svg_histogram(
                        labels, [("A", counts[0]), ("B", counts[1])], "response length"
                    ),
                )
            ],
        ),
        by_type,
        _matching_section(cmp),
    ]
    rows = []
    for p in cmp.pairs[:max_rows]:
        left, right = word_diff(p.response_a, p.response_b)
        notes = []
        if p.reference:
            notes.append(
                NoteView(label="reference", text=" | ".join(metrics.gold_answers(p.reference)))
            )
        notes.append(
            NoteView(
                label="metrics",
                text=f"A: {_metric_note(p.metrics_a)}; B: {_metric_note(p.metrics_b)}",
            )
        )
        fn = _filter_note(p.status_b, p.reason_b, p.filter_b)
        if fn:
            notes.append(fn)
        tags = []
        for aspect, v in p.verdicts.items():
            if v.outcome is None:
                notes.append(
                    NoteView(
                        label=aspect, text="not judged (a call failed; see failures)", tone="lose"
                    )
                )
                tags.append(f"{aspect}: failed")
                continue
            tags.append(f"{aspect}: {_OUTCOME_TAG[v.outcome]}")
            orders = []
            for o in (v.a_first, v.b_first):
                if o is not None:
                    who = {"a": "A", "b": "B", "tie": "tie"}[o.winner]
                    orders.append(f"[{o.shown_first.upper()} shown first → {who}] {o.rationale}")
            notes.append(
                NoteView(
                    label=f"{aspect}: {_OUTCOME_TAG[v.outcome]}"
                    + ("" if v.consistent else " (orders disagree)"),
                    text="  ".join(orders),
                    tone=_TONE[v.outcome],
                )
            )
        key = p.id_a if p.id_a == p.id_b else f"{p.id_a} / {p.id_b}"
        rows.append(
            RowView(
                key=key + (f" · turn {p.turn}" if p.position else ""),
                task_type=p.task_type or UNKNOWN_TASK,
                tags=tags,
                instruction=p.instruction,
                left_label=f"A — {cmp.a}",
                right_label=f"B — {cmp.b}",
                left_html=left,
                right_html=right,
                notes=notes,
                changed=p.response_a != p.response_b,
            )
        )
    return ReportView(
        title="realign comparison",
        subtitle=f"A = {cmp.a}   vs   B = {cmp.b}",
        meta=[
            ("judge model", cmp.model),
            ("backend", cmp.backend),
            ("reference", cmp.reference or "none"),
            ("judged", cmp.created.strftime("%Y-%m-%d %H:%M UTC")),
            ("failed judge calls", str(len(cmp.failures))),
        ],
        cards=cards,
        sections=sections,
        rows=rows,
        total_rows=len(cmp.pairs),
    )


def _warning_sections(model: str, warnings: list[str]) -> list[SectionView]:
    """The judge-unfit warning, first in the report when the verdicts look degenerate."""
    if not warnings:
        return []
    return [
        SectionView(title="Warning: the judge looks unfit", notes=[unfit_message(model, warnings)])
    ]


def _matching_section(cmp: Comparison) -> SectionView:
    m = cmp.matching
    sec = SectionView(
        title="Matching and failures",
        notes=[
            f"{m.pairs} record pairs: {m.by_id} matched by id, {m.by_instruction} by instruction "
            f"text; {len(m.unmatched)} unmatched."
        ],
    )
    if m.instruction_mismatch_ids:
        sec.notes.append(
            f"{len(m.instruction_mismatch_ids)} pairs matched by id have different instructions: "
            + ", ".join(m.instruction_mismatch_ids[:20])
        )
    if m.unmatched:
        sec.details.append(
            (
                "Unmatched records",
                [
                    f"{u.side.upper()} id {u.id} (#{u.index}): {u.reason} — {u.instruction[:120]}"
                    for u in m.unmatched
                ],
            )
        )
    if cmp.failures:
        sec.details.append(
            (
                "Failed judge calls",
                [
                    f"id {f.id} turn {f.turn} {f.aspect} {f.order or ''}: {f.error}"
                    for f in cmp.failures
                ],
            )
        )
    return sec


# --- pointwise scores ---------------------------------------------------------------------


def scores_view(rep: ScoresReport, max_rows: int = MAX_ROWS) -> ReportView:
    cards = [("responses judged", str(len(rep.units)))]
    for a in rep.aspects:
        st = rep.summary[a].overall
        cards.append((f"{a}: mean score", f"{st.mean:.2f} [{st.low:.2f}–{st.high:.2f}]"))
    if rep.metrics.containment_rate is not None:
        cards.append(("contains gold answer", _pct(rep.metrics.containment_rate)))
    table = TableView(
        caption="Scores (1–10)",
        header=["aspect", "n", "mean [95% CI]", *[str(k) for k in range(1, 11)]],
        rows=[
            [a, str(st.n), f"{st.mean:.2f} [{st.low:.2f}–{st.high:.2f}]", *map(str, st.histogram)]
            for a in rep.aspects
            for st in [rep.summary[a].overall]
        ],
        note=f"Intervals: percentile bootstrap over records, {rep.resamples} resamples, seed {rep.seed}.",
    )
    charts = [
        ChartView(
            title=f"{a} score distribution",
            svg=svg_histogram(
                [str(k) for k in range(1, 11)],
                [(a, rep.summary[a].overall.histogram)],
                f"{a} scores",
            ),
        )
        for a in rep.aspects
    ]
    by_type = SectionView(title="By task type")
    for a in rep.aspects:
        by_type.tables.append(
            TableView(
                caption=a,
                header=["task type", "n", "mean [95% CI]"],
                rows=[
                    [tt, str(s.n), f"{s.mean:.2f} [{s.low:.2f}–{s.high:.2f}]"]
                    for tt, s in rep.summary[a].by_task_type.items()
                ],
            )
        )
    failures = SectionView(title="Failures", notes=[f"{len(rep.failures)} failed judge calls."])
    if rep.failures:
        failures.details.append(
            (
                "Failed judge calls",
                [f"id {f.id} turn {f.turn} {f.aspect}: {f.error}" for f in rep.failures],
            )
        )
    rows = []
    for u in rep.units[:max_rows]:
        notes = [
            NoteView(
                label=f"{a}: {s.score}/10",
                text=s.rationale,
                tone="win" if s.score >= 7 else "lose" if s.score <= 4 else "tie",
            )
            for a, s in u.scores.items()
        ]
        if u.reference:
            notes.append(
                NoteView(label="reference", text=" | ".join(metrics.gold_answers(u.reference)))
            )
        notes.append(NoteView(label="metrics", text=_metric_note(u.metrics)))
        esc = str(escape(u.response))
        rows.append(
            RowView(
                key=u.id + (f" · turn {u.turn}" if u.position else ""),
                task_type=u.task_type or UNKNOWN_TASK,
                tags=[f"{a}: {s.score}" for a, s in u.scores.items()],
                instruction=u.instruction,
                left_label="response",
                right_label="",
                left_html=esc,
                right_html="",
                notes=notes,
                changed=False,
            )
        )
    return ReportView(
        title="realign scores",
        subtitle=rep.input,
        meta=[
            ("judge model", rep.model),
            ("backend", rep.backend),
            ("reference", rep.reference or "none"),
            ("judged", rep.created.strftime("%Y-%m-%d %H:%M UTC")),
        ],
        cards=cards,
        sections=[
            *_warning_sections(rep.model, rep.judge_warnings),
            SectionView(title="Summary", tables=[table], charts=charts),
            SectionView(
                title="Reference metrics (no LLM)",
                tables=[metrics_table([("responses", rep.metrics)], "responses")],
            ),
            by_type,
            failures,
        ],
        rows=rows,
        total_rows=len(rep.units),
    )


# --- a `realign run` output ---------------------------------------------------------------


def run_view(
    records: Iterable[Record],
    *,
    source: str,
    references: ReferenceIndex | None = None,
    read_errors: Sequence[str] = (),
    max_rows: int = MAX_ROWS,
) -> ReportView:
    """Statistics and the diff view of a run output, from its records' `realign` keys."""
    statuses: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    rules: Counter[str] = Counter()
    orig_m: list[metrics.ResponseMetrics] = []
    final_m: list[metrics.ResponseMetrics] = []
    scores: dict[str, list[int]] = defaultdict(list)
    rows: list[RowView] = []
    total = 0
    for rec in records:
        for a, s in rec.meta.scores.items():
            scores[a].append(s.score)
        for u in units_of(rec):
            total += 1
            status = u.status or "not realigned"
            tt = u.task_type or UNKNOWN_TASK
            statuses[status] += 1
            by_type[tt][status] += 1
            if u.filter is not None:
                rules[u.filter.rule] += 1
            original = u.original if u.original is not None else u.response
            ref = references.lookup([u.id], u.instruction, u.position) if references else None
            orig_m.append(metrics.response_metrics(original, ref, u.task_type, u.instruction))
            final_m.append(metrics.response_metrics(u.response, ref, u.task_type, u.instruction))
            if len(rows) >= max_rows:
                continue
            left, right = word_diff(original, u.response)
            notes = []
            fn = _filter_note(u.status, u.reason, u.filter)
            if fn:
                notes.append(fn)
            if ref:
                notes.append(
                    NoteView(label="reference", text=" | ".join(metrics.gold_answers(ref)))
                )
            notes.append(
                NoteView(
                    label="metrics",
                    text=f"original: {_metric_note(orig_m[-1])}; final: {_metric_note(final_m[-1])}",
                )
            )
            rows.append(
                RowView(
                    key=u.id + (f" · turn {u.turn}" if u.position else ""),
                    task_type=tt,
                    tags=[status] + ([f"rule: {u.filter.rule}"] if u.filter else []),
                    instruction=u.instruction,
                    left_label="original",
                    right_label="final (realigned)",
                    left_html=left,
                    right_html=right,
                    notes=notes,
                    changed=original != u.response,
                )
            )
    sum_o, sum_f = metrics.summarize(orig_m), metrics.summarize(final_m)
    cards = [("responses", str(total))]
    for s in ("rewritten", "kept", "skipped", "failed"):
        if statuses.get(s):
            cards.append((s, f"{statuses[s]} ({_pct(statuses[s] / total)})"))
    if sum_o.containment_rate is not None and sum_f.containment_rate is not None:
        cards.append(("original contains gold answer", _pct(sum_o.containment_rate)))
        cards.append(("final contains gold answer", _pct(sum_f.containment_rate)))
    cards.append(
        ("mean tokens original → final", f"{sum_o.mean_tokens:.0f} → {sum_f.mean_tokens:.0f}")
    )
    status_names = sorted(statuses, key=lambda s: -statuses[s])
    type_table = TableView(
        caption="Status by task type",
        header=["task type", "n", *status_names],
        rows=[
            [tt, str(sum(c.values())), *(str(c.get(s, 0)) for s in status_names)]
            for tt, c in sorted(by_type.items(), key=lambda kv: -sum(kv[1].values()))
        ],
    )
    labels, counts = _token_bins([[m.tokens for m in orig_m], [m.tokens for m in final_m]])
    summary = SectionView(
        title="Summary",
        tables=[
            TableView(
                caption="Status",
                header=["status", "responses"],
                rows=[[s, str(statuses[s])] for s in status_names],
            ),
            type_table,
        ],
        charts=[
            ChartView(
                title="Status",
                svg=svg_count_bars([(s, statuses[s]) for s in status_names], "status counts"),
            ),
            ChartView(
                title="Rewritten share by task type",
                svg=svg_share_bars(
                    [
                        (tt, c.get("rewritten", 0), sum(c.values()))
                        for tt, c in sorted(by_type.items(), key=lambda kv: -sum(kv[1].values()))
                    ],
                    "rewritten share by task type",
                ),
            ),
        ],
    )
    if rules:
        summary.tables.append(
            TableView(
                caption="Filter decisions",
                header=["rule", "units"],
                rows=[[r, str(n)] for r, n in rules.most_common()],
            )
        )
    if read_errors:
        summary.details.append(("Records that could not be read", list(read_errors)))
    sections = [
        summary,
        SectionView(
            title="Reference metrics (no LLM)",
            tables=[
                metrics_table(
                    [("original", sum_o), ("final", sum_f)], "original and final side by side"
                )
            ],
            charts=[
                ChartView(
                    title="Response length (tokens)",
                    svg=svg_histogram(
                        labels, [("original", counts[0]), ("final", counts[1])], "response length"
                    ),
                )
            ],
        ),
    ]
    if scores:
        sections.append(
            SectionView(
                title="Judge scores in the run output",
                tables=[
                    TableView(
                        caption="Scores (1–10)",
                        header=["aspect", "n", "mean"],
                        rows=[
                            [a, str(len(v)), f"{sum(v) / len(v):.2f}"]
                            for a, v in sorted(scores.items())
                        ],
                    )
                ],
            )
        )
    return ReportView(
        title="realign run report",
        subtitle=source,
        meta=[("records' responses", str(total)), ("reference", "given" if references else "none")],
        cards=cards,
        sections=sections,
        rows=rows,
        total_rows=total,
    )


# --- rendering ----------------------------------------------------------------------------

_env = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
)


def render_html(view: ReportView) -> str:
    src = (
        resources.files("realign")
        .joinpath("templates", "report.html.j2")
        .read_text(encoding="utf-8")
    )
    return _env.from_string(src).render(view=view, Markup=Markup)
