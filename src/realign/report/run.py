"""The report of a `realign run` output: original against realigned, no judging."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from realign import metrics
from realign.judge import UNKNOWN_TASK, ReferenceIndex, units_of
from realign.records import Record
from realign.report.blocks import filter_note, metric_note, metrics_table
from realign.report.diff import word_diff
from realign.report.svg import pct, svg_count_bars, svg_histogram, svg_share_bars, token_bins
from realign.report.views import (
    MAX_ROWS,
    ChartView,
    NoteView,
    ReportView,
    RowView,
    SectionView,
    TableView,
)


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
    # `realign run`'s summary counts records (by their first response's type and the
    # record's status); this report counts responses (one per assistant turn): both are shown.
    record_statuses: Counter[str] = Counter()
    for rec in records:
        record_statuses[rec.meta.status if rec.meta.status != "pending" else "not realigned"] += 1
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
            fn = filter_note(u.status, u.reason, u.filter)
            if fn:
                notes.append(fn)
            if ref:
                notes.append(
                    NoteView(label="reference", text=" | ".join(metrics.gold_answers(ref)))
                )
            notes.append(
                NoteView(
                    label="metrics",
                    text=f"original: {metric_note(orig_m[-1])}; final: {metric_note(final_m[-1])}",
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
    n_records = record_statuses.total()
    cards = [("records", str(n_records)), ("responses (assistant turns)", str(total))]
    for name in ("rewritten", "kept", "skipped", "failed"):
        if statuses.get(name):
            cards.append((f"{name} responses", f"{statuses[name]} ({pct(statuses[name] / total)})"))
    if sum_o.containment_rate is not None and sum_f.containment_rate is not None:
        cards.append(("original contains gold answer", pct(sum_o.containment_rate)))
        cards.append(("final contains gold answer", pct(sum_f.containment_rate)))
    cards.append(
        ("mean tokens original → final", f"{sum_o.mean_tokens:.0f} → {sum_f.mean_tokens:.0f}")
    )
    status_names = sorted(statuses | record_statuses, key=lambda s: -statuses[s])
    type_table = TableView(
        caption="Responses by task type and status",
        header=["task type", "n", *status_names],
        rows=[
            [tt, str(sum(c.values())), *(str(c.get(s, 0)) for s in status_names)]
            for tt, c in sorted(by_type.items(), key=lambda kv: -sum(kv[1].values()))
        ],
    )
    labels, counts = token_bins([[m.tokens for m in orig_m], [m.tokens for m in final_m]])
    summary = SectionView(
        title="Summary",
        tables=[
            TableView(
                caption="Status",
                header=["status", "records", "responses"],
                rows=[
                    [s, str(record_statuses[s]), str(statuses[s])] for s in status_names
                ],
                note="A record is counted once, with its status (rewritten when any of its "
                "responses was), as `realign run` counts them; a response is one assistant "
                "turn.",
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
                header=["rule", "responses"],
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
        meta=[
            ("records", str(n_records)),
            ("responses", str(total)),
            ("reference", "given" if references else "none"),
        ],
        cards=cards,
        sections=sections,
        rows=rows,
        total_rows=total,
    )
