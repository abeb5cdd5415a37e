"""The report of a pairwise `Comparison`: win/tie/lose by aspect and task type, the pairs."""

from __future__ import annotations

from realign import metrics
from realign.judge import UNKNOWN_TASK, Comparison, LengthControlled, OutcomeStats
from realign.report.blocks import filter_note, metric_note, metrics_table, warning_sections
from realign.report.diff import word_diff
from realign.report.svg import pct, svg_histogram, svg_outcome_bars, token_bins
from realign.report.views import (
    MAX_ROWS,
    ChartView,
    NoteView,
    ReportView,
    RowView,
    SectionView,
    TableView,
)

_OUTCOME_TAG = {"win": "B better", "tie": "tie", "lose": "A better"}
_TONE = {"win": "win", "tie": "tie", "lose": "lose"}


LC_NOTE = (
    "Length-controlled: judges tend to prefer the longer answer, so this is B's win rate read "
    "from a logistic model of each verdict on the two answers' length difference, at equal "
    "length (AlpacaEval 2 style; n/a under 10 judged pairs)."
)


def _ci(st: OutcomeStats, which: str) -> str:
    r = getattr(st, which)
    return f"{pct(r.rate)} [{pct(r.low)}–{pct(r.high)}]"


def _lc(lc: LengthControlled | None) -> str:
    return f"{pct(lc.rate)} [{pct(lc.low)}–{pct(lc.high)}]" if lc else "n/a"


def summary_table(cmp: Comparison) -> TableView:
    """Verdicts per aspect, raw and length-controlled (also used for each pair of a
    multi-dataset comparison)."""
    return TableView(
        caption=f"Judge verdicts (B = {cmp.b} against A = {cmp.a})",
        header=[
            "aspect",
            "n",
            "B better [95% CI]",
            "B better, length-controlled",
            "tie",
            "A better [95% CI]",
            "order-consistent",
        ],
        rows=[
            [
                a,
                str(st.n),
                _ci(st, "win"),
                _lc(cmp.summary[a].length_controlled),
                pct(st.tie.rate),
                _ci(st, "lose"),
                pct(st.consistency),
            ]
            for a in cmp.aspects
            if (st := cmp.summary[a].overall)
        ],
        note=cmp.convention
        + f" Intervals: percentile bootstrap over records, {cmp.resamples} resamples, "
        f"seed {cmp.seed}. " + LC_NOTE,
    )


def comparison_view(cmp: Comparison, max_rows: int = MAX_ROWS) -> ReportView:
    cards = [("pairs judged", str(len(cmp.pairs)))]
    for aspect in cmp.aspects:
        st = cmp.summary[aspect].overall
        cards.append((f"{aspect}: B better", _ci(st, "win")))
        if (lc := cmp.summary[aspect].length_controlled) is not None:
            cards.append((f"{aspect}: length-controlled", _lc(lc)))
    for name, m in (("A", cmp.metrics_a), ("B", cmp.metrics_b)):
        if m.containment_rate is not None:
            cards.append((f"{name} contains gold answer", pct(m.containment_rate)))

    aspect_rows = [(a, cmp.summary[a].overall) for a in cmp.aspects]
    by_type = SectionView(title="By task type")
    for aspect in cmp.aspects:
        groups = cmp.summary[aspect].by_task_type
        by_type.tables.append(
            TableView(
                caption=aspect,
                header=[
                    "task type",
                    "n",
                    "B better [95% CI]",
                    "length-controlled",
                    "tie",
                    "A better [95% CI]",
                ],
                rows=[
                    [
                        tt,
                        str(st.n),
                        _ci(st, "win"),
                        _lc(cmp.summary[aspect].lc_by_task_type.get(tt)),
                        pct(st.tie.rate),
                        _ci(st, "lose"),
                    ]
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
    labels, counts = token_bins(
        [[p.metrics_a.tokens for p in cmp.pairs], [p.metrics_b.tokens for p in cmp.pairs]]
    )
    sections = [
        *warning_sections(cmp.model, cmp.judge_warnings),
        SectionView(
            title="Summary",
            tables=[summary_table(cmp)],
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
                text=f"A: {metric_note(p.metrics_a)}; B: {metric_note(p.metrics_b)}",
            )
        )
        fn = filter_note(p.status_b, p.reason_b, p.filter_b)
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
