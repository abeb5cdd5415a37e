"""Model prices and cost estimates.

The table is a data file (`realign/data/prices.yaml`, dollars per 1M tokens) that users
override model by model with `$REALIGN_HOME/prices.yaml` or `--prices FILE`. `estimate()` is a
pure function used by `realign run --dry-run`: per-stage request and token counts in, dollars out.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from realign.config import realign_home


class Price(BaseModel):
    """US dollars per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    batch_discount: float = Field(default=0.5, ge=0, le=1)

    def cost(self, input_tokens: float, output_tokens: float, *, batch: bool = False) -> float:
        dollars = (input_tokens * self.input + output_tokens * self.output) / 1_000_000
        return dollars * (1 - self.batch_discount) if batch else dollars


class PriceError(ValueError):
    """A price file that cannot be read; the message names the file and the entry."""


class PriceTable(BaseModel):
    models: dict[str, Price] = Field(default_factory=dict)
    sources: list[str] = Field(default_factory=list)  # files merged, for messages

    def lookup(self, model: str) -> Price | None:
        """Exact name, else the longest entry the name starts with; `provider/` is ignored."""
        name = model.split("/")[-1].lower()
        if name in self.models:
            return self.models[name]
        prefixes = [m for m in self.models if name.startswith(m)]
        return self.models[max(prefixes, key=len)] if prefixes else None

    def merged(self, other: PriceTable) -> PriceTable:
        return PriceTable(
            models={**self.models, **other.models}, sources=[*self.sources, *other.sources]
        )


def _parse(text: str, source: str) -> PriceTable:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise PriceError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("models", {}), dict):
        raise PriceError(f"{source}: expected a mapping with a `models:` mapping")
    default_discount = (doc.get("defaults") or {}).get("batch_discount", 0.5)
    models: dict[str, Price] = {}
    for name, entry in (doc.get("models") or {}).items():
        if not isinstance(entry, dict):
            raise PriceError(f"{source}: models.{name}: expected {{input: …, output: …}}")
        try:
            models[str(name).lower()] = Price.model_validate(
                {"batch_discount": default_discount, **entry}
            )
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise PriceError(f"{source}: models.{name}.{field}: {err['msg']}") from e
    return PriceTable(models=models, sources=[source])


def load_prices(override: Path | None = None) -> PriceTable:
    """The built-in table, then `$REALIGN_HOME/prices.yaml`, then `override` (later wins)."""
    builtin = resources.files("realign") / "data" / "prices.yaml"
    table = _parse(builtin.read_text(encoding="utf-8"), "realign/data/prices.yaml")
    for path in (realign_home() / "prices.yaml", override):
        if path is None:
            continue
        if not path.is_file():
            if path is override:
                raise PriceError(f"{path}: price file not found")
            continue
        table = table.merged(_parse(path.read_text(encoding="utf-8"), str(path)))
    return table


# ---------------------------------------------------------------- estimates (pure functions)


class StageEstimate(BaseModel):
    """What one stage will send: totals over the whole dataset."""

    stage: str
    requests: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)


class CostLine(StageEstimate):
    dollars: float | None  # None when the model has no known price


class CostReport(BaseModel):
    model: str
    batch: bool = False
    price: Price | None
    stages: list[CostLine]
    total: CostLine

    @property
    def priced(self) -> bool:
        return self.price is not None


def estimate(
    model: str,
    items: list[StageEstimate],
    *,
    prices: PriceTable | None = None,
    batch: bool = False,
) -> CostReport:
    """Per-stage and total requests, tokens and dollars for `model` (dollars None if unpriced)."""
    table = prices if prices is not None else load_prices()
    price = table.lookup(model)

    def dollars(inp: int, out: int) -> float | None:
        return None if price is None else price.cost(inp, out, batch=batch)

    lines = [
        CostLine(**it.model_dump(), dollars=dollars(it.input_tokens, it.output_tokens))
        for it in items
    ]
    tot_in = sum(x.input_tokens for x in lines)
    tot_out = sum(x.output_tokens for x in lines)
    total = CostLine(
        stage="total",
        requests=sum(x.requests for x in lines),
        input_tokens=tot_in,
        output_tokens=tot_out,
        dollars=dollars(tot_in, tot_out),
    )
    return CostReport(model=model, batch=batch, price=price, stages=lines, total=total)


def format_dollars(value: float | None) -> str:
    if value is None:
        return "unknown price"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def render_table(report: CostReport) -> Any:
    """A rich Table of the report (import of rich kept here, at the edge)."""
    from rich.table import Table

    mode = " (Batch API)" if report.batch else ""
    title = f"Estimated cost for {report.model}{mode}"
    table = Table(title=title, title_justify="left")
    for col in ("stage", "requests", "input tokens", "output tokens", "cost"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for line in [*report.stages, report.total]:
        style = "bold" if line.stage == "total" else None
        table.add_row(
            line.stage,
            f"{line.requests:,}",
            f"{line.input_tokens:,}",
            f"{line.output_tokens:,}",
            format_dollars(line.dollars),
            style=style,
        )
    if report.price is None:
        table.caption = (
            f"No price known for {report.model!r}: add it to $REALIGN_HOME/prices.yaml "
            "or pass --prices FILE."
        )
    else:
        p = report.price
        table.caption = f"${p.input}/1M input, ${p.output}/1M output" + (
            f", {p.batch_discount:.0%} batch discount" if report.batch else ""
        )
    return table
