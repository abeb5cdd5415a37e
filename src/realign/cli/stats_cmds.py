"""`realign stats`: counts, task types, statuses and token lengths of a dataset."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import typer

from realign.cli.data_cmds import (
    SHOWN_REJECTS,
    FieldsOpt,
    InputArg,
    InputFormatOpt,
    MaxRecordOpt,
    _console,
    _open_reader,
    _progress,
    _Rejects,
    _say,
)

if TYPE_CHECKING:
    from rich.console import Console

    from realign.records import Record


def _lengths(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
    return {
        "count": len(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
    }


def _domain(url: str) -> str | None:
    host = urlparse(url).hostname
    return host.removeprefix("www.") if host else None


class _Tally:
    """Everything `stats` counts, one record at a time (lengths are kept as ints)."""

    def __init__(self) -> None:
        self.records = 0
        self.turns = 0
        self.single = 0
        self.multi = 0
        self.no_response = 0
        self.empty_response = 0
        self.units = 0
        self.task_types: Counter[str] = Counter()
        self.task_source: Counter[str] = Counter()
        self.with_meta = 0
        self.status: Counter[str] = Counter()
        self.unit_status: Counter[str] = Counter()
        self.with_evidence = 0
        self.evidence = 0
        self.domains: Counter[str] = Counter()
        self.instruction_tokens: list[int] = []
        self.response_tokens: list[int] = []

    def add(self, record: Record) -> None:
        from realign import tokens
        from realign.io.formats import META_KEY
        from realign.records import input_task_type

        self.records += 1
        self.turns += len(record.turns)
        users = sum(t.role == "user" for t in record.turns)
        units = record.assistant_turns()
        if users > 1 or len(units) > 1:
            self.multi += 1
        else:
            self.single += 1
        if not units:
            self.no_response += 1
        elif not record.turns[units[-1]].content.strip():
            self.empty_response += 1
        self.units += len(units)
        by_turn = {u.turn: u for u in record.meta.units}
        for i in units:
            unit = by_turn.get(i)
            if unit is not None and unit.task_type:
                self.task_types[unit.task_type] += 1
                self.task_source["realign"] += 1
            elif (cat := input_task_type(record, i)) is not None:
                self.task_types[cat] += 1
                self.task_source["input"] += 1
            self.instruction_tokens.append(tokens.count(record.instruction_for(i)))
            self.response_tokens.append(tokens.count(record.turns[i].content))
        if META_KEY in record.raw:
            self.with_meta += 1
            self.status[record.meta.status] += 1
            self.unit_status.update(u.status for u in record.meta.units)
        evidence = [e for u in record.meta.units for e in u.evidence]
        if evidence:
            self.with_evidence += 1
            self.evidence += len(evidence)
            self.domains.update(d for e in evidence if (d := _domain(e.url)))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "records": self.records,
            "turns": self.turns,
            "single_turn": self.single,
            "multi_turn": self.multi,
            "units": self.units,
            "no_response": self.no_response,
            "empty_final_response": self.empty_response,
            "task_types": dict(self.task_types.most_common()),
            "task_type_source": dict(self.task_source),
            "units_without_task_type": self.units - sum(self.task_source.values()),
            "tokens": {
                "encoding": "cl100k_base",
                "instruction": _lengths(self.instruction_tokens),
                "response": _lengths(self.response_tokens),
            },
        }
        if self.with_meta:
            out["realign"] = {
                "records_with_metadata": self.with_meta,
                "status": dict(self.status.most_common()),
                "unit_status": dict(self.unit_status.most_common()),
            }
        if self.with_evidence:
            out["evidence"] = {
                "records_with_evidence": self.with_evidence,
                "snippets": self.evidence,
                "top_domains": dict(self.domains.most_common(10)),
            }
        return out


def _print_stats(console: Console, data: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()

    def row(name: str, value: Any) -> None:
        table.add_row(Text(name), Text(str(value)))

    for key in ("input", "format", "records", "rejected", "turns", "single_turn", "multi_turn"):
        row(key.replace("_", " "), data[key])
    row("assistant turns (units)", data["units"])
    row("no assistant turn", data["no_response"])
    row("empty final response", data["empty_final_response"])
    for side in ("instruction", "response"):
        s = data["tokens"][side]
        if s["count"]:
            row(
                f"{side} tokens",
                f"mean {s['mean']}, median {s['median']}, p95 {s['p95']}, max {s['max']}",
            )
    if data["task_types"]:
        src = ", ".join(f"{k} {v}" for k, v in data["task_type_source"].items())
        row("task types", f"({src}; {data['units_without_task_type']} units without)")
        for name, n in data["task_types"].items():
            row(f"  {name}", n)
    else:
        row("task types", "none in the input")
    if "realign" in data:
        meta = data["realign"]
        row("with realign metadata", meta["records_with_metadata"])
        row("status", ", ".join(f"{k} {v}" for k, v in meta["status"].items()))
        row("unit status", ", ".join(f"{k} {v}" for k, v in meta["unit_status"].items()))
    if "evidence" in data:
        ev = data["evidence"]
        row("records with evidence", f"{ev['records_with_evidence']} ({ev['snippets']} snippets)")
        row("top source domains", ", ".join(f"{k} {v}" for k, v in ev["top_domains"].items()))
    console.print(table)


def stats(
    input: str = InputArg,
    input_format: str | None = InputFormatOpt,
    fields: str | None = FieldsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON on stdout."),
    max_record_mb: float = MaxRecordOpt,
) -> None:
    """Count records, turns, task types, statuses and token lengths of a dataset.

    Token lengths use tiktoken's cl100k_base (offline). Task types come from realign's
    metadata when present, else from the input (`category` on the user turn or top level).
    Unreadable records are listed with file:line (id): field and counted as rejected.

    Examples:

        realign stats examples/realign_items.json

        realign stats gsm8k.jsonl --json \\
            --fields instruction=question,response=answer
    """
    from realign.records import Record

    console = _console()
    reader = _open_reader(console, input, input_format, fields, max_record_mb)
    rejects = _Rejects(console)
    tally = _Tally()
    with _progress(console, reader) as tick:
        for n, item in enumerate(reader, start=1):
            tick(n)
            if isinstance(item, Record):
                tally.add(item)
            else:
                rejects.add(item)
    data = {"input": input, "format": reader.format, **tally.summary(), "rejected": rejects.total}
    if rejects.total > SHOWN_REJECTS:
        _say(console, f"{rejects.total - SHOWN_REJECTS} more rejects not shown", "yellow")
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        from realign.cli.console import make_console

        _print_stats(make_console(stderr=False, highlight=False), data)
    if tally.records == 0 and rejects.total:
        raise typer.Exit(1)
