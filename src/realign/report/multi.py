"""The report of a comparison of three or more datasets: the Bradley-Terry ratings per aspect,
then each pairwise comparison's verdicts (raw and length-controlled)."""

from __future__ import annotations

from realign.judge import MultiComparison
from realign.report.blocks import warning_sections
from realign.report.comparison import summary_table
from realign.report.views import ReportView, SectionView, TableView


def multi_view(m: MultiComparison) -> ReportView:
    ratings = SectionView(title="Ratings", notes=[m.note])
    for aspect in m.aspects:
        ratings.tables.append(
            TableView(
                caption=aspect,
                header=["dataset", "rating [95% CI]", "judged pairs", "score (wins + ties/2)"],
                rows=[
                    [
                        r.name,
                        f"{r.rating:.0f} [{r.low:.0f}–{r.high:.0f}]",
                        str(r.games),
                        f"{r.score:g}",
                    ]
                    for r in m.ratings[aspect]
                ],
                note=f"Intervals: percentile bootstrap over records, {m.resamples} resamples, "
                f"seed {m.seed}.",
            )
        )
    pairs = SectionView(
        title="Pairwise comparisons", tables=[summary_table(c) for c in m.comparisons]
    )
    best = {a: m.ratings[a][0].name for a in m.aspects if m.ratings[a]}
    return ReportView(
        title="realign comparison of several datasets",
        subtitle="   ·   ".join(m.datasets),
        meta=[
            ("judge model", m.model),
            ("backend", m.backend),
            ("compared", f"each with {m.baseline}" if m.baseline else "every pair"),
            ("judged", m.created.strftime("%Y-%m-%d %H:%M UTC")),
            ("failed judge calls", str(len(m.failures))),
        ],
        cards=[("datasets", str(len(m.datasets)))]
        + [(f"{a}: highest rated", name) for a, name in best.items()],
        sections=[*warning_sections(m.model, m.judge_warnings), ratings, pairs],
        rows=[],
        total_rows=0,
    )
