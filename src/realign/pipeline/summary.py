"""The tally of a run: what was read, written, failed, and why each rewrite was accepted or
not. The local and `--engine ray` runs count every finished record the same way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from realign.records import Failure, Record


@dataclass
class RunSummary:
    read: int = 0
    resumed: int = 0
    written: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    task_types: Counter[str] = field(default_factory=Counter)
    filter_rules: Counter[str] = field(default_factory=Counter)
    # Units a rewrite was tried for, by outcome: accepted, or the original kept by the
    # filter, by the model's "format does not fit", or after a truncated rewrite.
    attempts: Counter[str] = field(default_factory=Counter)
    pending: int = 0  # batch mode: records waiting for Batch API answers
    stopped: str = ""  # why the run stopped early (resumable), "" when complete
    output: Path | None = None
    failures: Path | None = None

    def count(self, out: Record | Failure) -> None:
        """Tally one finished record (local and `--engine ray` runs alike)."""
        if isinstance(out, Record):
            self.statuses[out.meta.status] += 1
            self.task_types[out.meta.task_type or "?"] += 1
            for u in out.meta.units:
                if u.filter is not None:
                    self.filter_rules[u.filter.rule] += 1
                if u.status in ("rewritten", "kept"):
                    kept_by = "filter" if u.filter else "format" if u.candidates else "truncated"
                    self.attempts["accepted" if u.status == "rewritten" else kept_by] += 1
        else:
            self.failed += 1
