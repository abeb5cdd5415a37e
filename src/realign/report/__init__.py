"""One self-contained HTML report: summary tables, inline SVG charts, a side-by-side diff view.

Three sources give the same kind of page: a pairwise `Comparison` (`comparison`) or one of
several datasets (`multi`), pointwise
`ScoresReport` (`scores`), or the records of a `realign run` output (`run`: original vs
realigned, no judging). Each is first turned into a neutral `ReportView` (`views`) by a pure
function, then rendered by one Jinja2 template (`templates/report.html.j2`) with autoescaping
on. The page loads nothing from the network: CSS, JavaScript and SVG (`svg`) are inline, so it
can be mailed or archived as one file.
"""

from realign.report.comparison import comparison_view
from realign.report.diff import word_diff
from realign.report.multi import multi_view
from realign.report.run import run_view
from realign.report.scores import scores_view
from realign.report.views import MAX_ROWS, ReportView, render_html

__all__ = [
    "MAX_ROWS",
    "ReportView",
    "comparison_view",
    "multi_view",
    "render_html",
    "run_view",
    "scores_view",
    "word_diff",
]
