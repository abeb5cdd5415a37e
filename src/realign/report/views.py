"""The neutral view every source of a report becomes, and its one renderer: a Jinja2 template
(`templates/report.html.j2`) with autoescaping on."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import jinja2
from markupsafe import Markup
from pydantic import BaseModel, Field

MAX_ROWS = 5000  # diff rows in one page; statistics always cover everything


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
