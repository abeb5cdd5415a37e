"""The report of pointwise `ScoresReport`s: score distributions by aspect and task type."""

from __future__ import annotations

from markupsafe import escape

from realign import metrics
from realign.judge import UNKNOWN_TASK, ScoresReport
from realign.report.blocks import metric_note, metrics_table, warning_sections
from realign.report.svg import pct, svg_histogram
from realign.report.views import (
    MAX_ROWS,
    ChartView,
    NoteView,
    ReportView,
    RowView,
    SectionView,
    TableView,
)


def scores_view(rep: ScoresReport, max_rows: int = MAX_ROWS) -> ReportView:
    cards = [("responses judged", str(len(rep.units)))]
    for a in rep.aspects:
        st = rep.summary[a].overall
        cards.append((f"{a}: mean score", f"{st.mean:.2f} [{st.low:.2f}–{st.high:.2f}]"))
    if rep.metrics.containment_rate is not None:
        cards.append(("contains gold answer", pct(rep.metrics.containment_rate)))
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
                x_title="score (1–10)",
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
        notes.append(NoteView(label="metrics", text=metric_note(u.metrics)))
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
            *warning_sections(rep.model, rep.judge_warnings),
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
