"""The dataset card of a pushed run output: facts gathered from the output's `realign` keys,
its failures file and an optional judge output, rendered with `templates/dataset_card.md.j2`.

Pure functions only: the caller reads the files and hands the objects over."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
import yaml

STATUSES = ("rewritten", "kept", "skipped", "failed")
SHARD_NAME = re.compile(r"^data/(?P<split>[A-Za-z0-9_.-]+?)-\d{5}-of-\d{5}\.parquet$")
# The Hub's size categories (`size_categories` in a card's YAML), by upper bound.
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


def size_category(n: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if n < bound), "n>1T")


def shard_name(split: str, k: int, n: int) -> str:
    return f"data/{split}-{k:05d}-of-{n:05d}.parquet"


def splits_of(paths: list[str]) -> dict[str, list[str]]:
    """Split name -> its data shards, from a repository's file list."""
    found: dict[str, list[str]] = defaultdict(list)
    for p in sorted(paths):
        if m := SHARD_NAME.match(p):
            found[m.group("split")].append(p)
    return dict(found)


def is_realign_output(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("realign"), dict)


@dataclass
class CardFacts:
    """What the card says about the run, tallied one output record / failure at a time."""

    records: int = 0
    by_type: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures_by_stage: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    backends: Counter[str] = field(default_factory=Counter)
    packs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (name, hash or "")
    presets: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    licenses: Counter[str] = field(default_factory=Counter)  # a `license` field of the records

    def add(self, obj: dict[str, Any]) -> None:
        meta = obj["realign"]
        self.records += 1
        status = meta.get("status") if meta.get("status") in STATUSES else "other"
        self.by_type[meta.get("task_type") or "unknown"][status] += 1
        for unit in meta.get("units") or []:
            flt = unit.get("filter") if isinstance(unit, dict) else None
            if isinstance(flt, dict) and flt.get("preset"):
                self.presets[flt["preset"]] += 1
        prov = meta.get("provenance") or {}
        for counter, key in (
            (self.models, "model"),
            (self.backends, "backend"),
            (self.commands, "command"),
            (self.versions, "realign_version"),
        ):
            if prov.get(key):
                counter[str(prov[key])] += 1
        if prov.get("criteria_pack"):
            self.packs[(prov["criteria_pack"], prov.get("pack_hash") or "")] += 1
        if isinstance(obj.get("license"), str) and obj["license"].strip():
            self.licenses[obj["license"].strip()] += 1

    def add_failure(self, line: dict[str, Any]) -> None:
        """A line of the run's failures file: counted under the type its record gives, if any."""
        rec: dict[str, Any] = line["record"] if isinstance(line.get("record"), dict) else {}
        meta: dict[str, Any] = rec["realign"] if isinstance(rec.get("realign"), dict) else {}
        task = meta.get("task_type") or rec.get("task_type") or rec.get("category") or "unknown"
        self.by_type[str(task)]["failed"] += 1
        self.failures_by_stage[str(line.get("stage") or "unknown")] += 1

    @property
    def failed(self) -> int:
        return sum(self.failures_by_stage.values())

    def license(self) -> str | None:
        """The records' own license when they all carry the same one."""
        if len(self.licenses) == 1:
            ((name, n),) = self.licenses.items()
            if n == self.records:
                return name
        return None

    def table(self) -> list[dict[str, Any]]:
        """One row per task type (most records first) and a total row."""
        rows: list[dict[str, Any]] = []
        for task, c in sorted(self.by_type.items(), key=lambda kv: (-kv[1].total(), kv[0])):
            rows.append({"task_type": task, **{s: c[s] for s in STATUSES}, "total": c.total()})
        total = {s: sum(r[s] for r in rows) for s in STATUSES}
        rows.append({"task_type": "all", **total, "total": sum(r["total"] for r in rows)})
        return rows


def judge_summary(data: Any) -> dict[str, Any] | None:
    """The headline numbers of a `realign judge` output (comparison, scores, or ratings of
    several datasets), or None when `data` is not one."""
    kinds = ("comparison", "scores", "multi_comparison")
    if not isinstance(data, dict) or data.get("kind") not in kinds:
        return None
    rows = []
    for aspect in data.get("aspects") or []:
        if data["kind"] == "multi_comparison":
            for r in (data.get("ratings") or {}).get(aspect) or []:
                rows.append({"aspect": aspect, **r})
            continue
        summary = (data.get("summary") or {}).get(aspect) or {}
        overall = summary.get("overall") or {}
        if data["kind"] == "comparison":
            rates = {k: overall.get(k) or {} for k in ("win", "tie", "lose")}
            lc = summary.get("length_controlled")  # None under 10 pairs or in older outputs
            rows.append({"aspect": aspect, "n": overall.get("n", 0), **rates, "lc": lc})
        else:
            rows.append({"aspect": aspect, "n": overall.get("n", 0), **overall})
    return {
        "kind": data["kind"],
        "model": data.get("model", "?"),
        "a": data.get("a"),
        "b": data.get("b"),
        "input": data.get("input"),
        "datasets": data.get("datasets"),
        "rows": rows,
    }


def yaml_header(*, license: str, records: int, splits: dict[str, list[str]], pretty: str) -> str:
    header = {
        "license": license,
        "pretty_name": pretty,
        "task_categories": ["text-generation"],
        "tags": ["realign", "sft"],
        "size_categories": [size_category(records)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": s, "path": f"data/{s}-*"} for s in sorted(splits) if splits[s]
                ],
            }
        ],
    }
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True)


def top(counter: Counter[Any]) -> list[tuple[Any, int]]:
    return counter.most_common()


def render_card(
    facts: CardFacts,
    *,
    repo: str,
    license: str,
    license_source: str,
    split: str,
    splits: dict[str, list[str]],
    judge: dict[str, Any] | None,
) -> str:
    src = resources.files("realign").joinpath("templates", "dataset_card.md.j2").read_text("utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pct"] = lambda x: f"{100 * float(x):.1f}%" if isinstance(x, int | float) else "?"
    env.filters["num"] = lambda x: f"{x:.2f}" if isinstance(x, int | float) else "?"
    return env.from_string(src).render(
        yaml_header=yaml_header(
            license=license, records=facts.records, splits=splits, pretty=repo.split("/")[-1]
        ),
        repo=repo,
        license=license,
        license_source=license_source,
        split=split,
        shards=len(splits.get(split, [])),
        facts=facts,
        table=facts.table(),
        models=top(facts.models),
        backends=top(facts.backends),
        packs=top(facts.packs),
        presets=top(facts.presets),
        commands=top(facts.commands),
        versions=top(facts.versions),
        failures_by_stage=top(facts.failures_by_stage),
        judge=judge,
        math=math,
    )
