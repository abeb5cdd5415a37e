"""Pieces every report view uses: the reference-metrics table, per-row notes, the
judge-unfit warning."""

from __future__ import annotations

from collections.abc import Sequence

from realign import metrics
from realign.judge import unfit_message
from realign.report.svg import pct
from realign.report.views import NoteView, SectionView, TableView


def _opt_pct(x: float | None) -> str:
    return "—" if x is None else pct(x)


def metrics_table(columns: Sequence[tuple[str, metrics.MetricsSummary]], caption: str) -> TableView:
    def row(name: str, fn: object) -> list[str]:
        return [name, *(fn(m) for _, m in columns)]  # type: ignore[operator]

    rows = [row("responses", lambda m: str(m.n))]
    # Rows that apply to none of the columns (no reference given, no math in the data) are
    # left out rather than shown as "— of 0".
    if any(m.with_reference for _, m in columns):
        rows.append(
            row(
                "contains a gold answer",
                lambda m: f"{_opt_pct(m.containment_rate)} of {m.with_reference}",
            )
        )
    if any(m.math_items for _, m in columns):
        rows.append(
            row(
                "math final answer matches",
                lambda m: f"{_opt_pct(m.answer_match_rate)} of {m.math_items}",
            )
        )
    rows += [
        row("mean tokens", lambda m: f"{m.mean_tokens:.0f}"),
        row("median tokens", lambda m: f"{m.median_tokens:.0f}"),
        row("with a list", lambda m: pct(m.share_with_list)),
        row("with headings", lambda m: pct(m.share_with_heading)),
        row("with bold text", lambda m: pct(m.share_with_bold)),
        row("with code blocks", lambda m: pct(m.share_with_code)),
        row("mean paragraphs", lambda m: f"{m.mean_paragraphs:.1f}"),
    ]
    return TableView(
        caption=caption,
        header=["metric", *(n for n, _ in columns)],
        rows=rows,
        note=(
            "Containment: a normalised gold answer (lowercase, no punctuation or articles) "
            "occurs in the response, every line of it when the reference is a list answer; '—' "
            "when no reference was given."
        )
        if any(m.with_reference for _, m in columns)
        else "",
    )


def metric_note(m: metrics.ResponseMetrics) -> str:
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


def filter_note(status: str | None, reason: str, flt: object) -> NoteView | None:
    if status is None and flt is None:
        return None
    text = status or ""
    if reason:
        text += f": {reason}"
    if flt is not None:
        keep = "kept the original" if flt.keep_original else "accepted the rewrite"  # type: ignore[attr-defined]
        text += f" — filter {keep} (rule {flt.rule}{': ' + flt.reason if flt.reason else ''})"  # type: ignore[attr-defined]
    return NoteView(label="realign", text=text.strip(" :"))


def warning_sections(model: str, warnings: list[str]) -> list[SectionView]:
    """The judge-unfit warning, first in the report when the verdicts look degenerate."""
    if not warnings:
        return []
    return [
        SectionView(title="Warning: the judge looks unfit", notes=[unfit_message(model, warnings)])
    ]
