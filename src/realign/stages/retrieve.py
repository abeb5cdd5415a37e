"""Retrieval stage: evidence for knowledge-heavy units, from a search provider.

Three pure steps plus one cached call:

1. **Query** (`build_query`, `retrieve_query.py`) — deterministic, from the instruction the
   unit answers (the rule is in that module).
2. **Search** — `provider.search(query, k)` through `Engine.call("search", key, ...)`, whose
   key is the hash of (provider id, query, k): every raw answer is cached in the local store,
   so a rerun never pays twice. Raw answers are cached, cleaning happens after, so changing
   the cleaning rules needs no new searches.
3. **Cleaning** (`clean_evidence`, `retrieve_clean.py`) — dates, notices, navigation text and
   duplicates are dropped, the rest capped at `max_tokens` (the rules are in that module).

Failures never stop the run. A quota or auth error (HTTP 429/403 from Google, for instance)
disables the provider for the rest of the run with one message; five failures in a row of
any other kind do the same. The units concerned continue without evidence, and the reason is
recorded in `UnitMeta.evidence_note`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from realign.hashing import digest
from realign.records import Evidence, Record, UnitMeta, ensure_units, input_task_type
from realign.search.base import SearchError, SearchProvider
from realign.stages.retrieve_clean import DEFAULT_MAX_EVIDENCE_TOKENS, clean_evidence
from realign.stages.retrieve_query import build_query, request_context

if TYPE_CHECKING:
    from realign.criteria import CriteriaPack
    from realign.llm.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_K = 5
MAX_CONSECUTIVE_FAILURES = 5
NOTE_NO_EVIDENCE = "no usable evidence; rewritten without evidence"


# ---------------------------------------------------------------- the retriever


class RetrievalResult(BaseModel):
    query: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    note: str = ""


@dataclass
class RetrieverStats:
    searches: int = 0  # queries answered (cache hits included)
    with_evidence: int = 0
    empty: int = 0
    errors: int = 0
    skipped_disabled: int = 0
    error_messages: Counter[str] = field(default_factory=Counter)


class _ProviderDisabled(Exception):
    """A queued query found the provider disabled when its turn came."""


def _describe_error(e: SearchError) -> str:
    what = {"quota": "quota exceeded", "auth": "authentication failed"}.get(e.kind, "failed")
    return f"{what} (HTTP {e.status})" if e.status else what


class Retriever:
    """Evidence for instructions from one provider, cached through the engine.

    `engine` may be None (no cache: every query is sent), which tests and one-off scripts use.
    `on_message` receives the one-time "provider disabled" message (default: log warning).
    """

    def __init__(
        self,
        provider: SearchProvider | None,
        engine: Engine | None = None,
        *,
        k: int = DEFAULT_K,
        max_tokens: int = DEFAULT_MAX_EVIDENCE_TOKENS,
        retries: int = 2,
        on_message: Callable[[str], None] | None = None,
        whole_instruction: bool = False,
    ) -> None:
        self.provider = provider
        # ReAlign's retrieval.py searches with the whole instruction (`search_style: realign`)
        self.whole_instruction = whole_instruction
        self.engine = engine
        self.k = k
        self.max_tokens = max_tokens
        self.retries = retries
        self.on_message = on_message or log.warning
        self.disabled: str | None = None  # the reason, once the provider is switched off
        self.stats = RetrieverStats()
        self._consecutive_failures = 0

    def _disable(self, reason: str, detail: str) -> None:
        if self.disabled is None and self.provider is not None:
            self.disabled = reason
            self.on_message(
                f"{self.provider.name} search disabled for the rest of this run: {detail}. "
                "Units that still need evidence continue without it (see evidence_note)."
            )

    def _cache_key(self, query: str, k: int) -> str:
        assert self.provider is not None
        return digest([self.provider.provider_id, query, k])

    async def _raw_search(self, query: str, k: int) -> list[Evidence]:
        provider = self.provider
        assert provider is not None

        async def fetch() -> str:
            # Checked again here, once the engine gives this call a slot: queries queued
            # before a quota error must not be sent after it.
            if self.disabled:
                raise _ProviderDisabled
            for attempt in range(self.retries + 1):
                try:
                    found = await provider.search(query, k)
                    break
                except SearchError as e:
                    transient = e.kind == "other" and (e.status is None or e.status >= 500)
                    if not transient or attempt == self.retries:
                        raise
                    await asyncio.sleep(0.5 * 2**attempt)
            return json.dumps([e.model_dump() for e in found], ensure_ascii=False)

        if self.engine is None:
            text = await fetch()
        else:
            text = await self.engine.call("search", self._cache_key(query, k), fetch)
        return [Evidence.model_validate(x) for x in json.loads(text)]

    async def evidence_for(
        self,
        instruction: str,
        k: int | None = None,
        max_tokens: int | None = None,
        *,
        context: str = "",
    ) -> RetrievalResult:
        """Cleaned evidence for one instruction; never raises for search failures.

        `context`: the conversation's earlier requests, newest first (`request_context`).
        """
        k = self.k if k is None else k
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        query = (
            " ".join(instruction.split())
            if self.whole_instruction
            else build_query(instruction, context)
        )
        if self.provider is None:
            return RetrievalResult(query=None, note="retrieval: none (no search provider)")
        if not query:
            return RetrievalResult(query=None, note="no query: the instruction is empty")
        if self.disabled:
            self.stats.skipped_disabled += 1
            return RetrievalResult(query=query, note=f"search provider disabled: {self.disabled}")
        try:
            raw = await self._raw_search(query, k)
        except _ProviderDisabled:
            self.stats.skipped_disabled += 1
            return RetrievalResult(query=query, note=f"search provider disabled: {self.disabled}")
        except SearchError as e:
            self.stats.errors += 1
            self.stats.error_messages[str(e)] += 1
            if e.kind in ("quota", "auth"):
                self._disable(_describe_error(e), f"{_describe_error(e)}: {e.message}")
            else:
                self._consecutive_failures += 1
                if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    self._disable(
                        f"{self._consecutive_failures} failures in a row",
                        f"{self._consecutive_failures} failures in a row, the last: {e}",
                    )
            if self.disabled:
                return RetrievalResult(
                    query=query, note=f"search provider disabled: {self.disabled}"
                )
            return RetrievalResult(
                query=query, note=f"search failed: {e.message}; rewritten without evidence"
            )
        self._consecutive_failures = 0
        self.stats.searches += 1
        evidence, report = clean_evidence(raw, max_tokens)
        if not evidence:
            self.stats.empty += 1
            return RetrievalResult(query=query, note=f"{NOTE_NO_EVIDENCE} ({report.describe()})")
        self.stats.with_evidence += 1
        return RetrievalResult(query=query, evidence=evidence)


# ---------------------------------------------------------------- records


def unit_task_type(record: Record, unit: UnitMeta) -> str | None:
    """`unit.task_type`, else the input's category (then recorded on the unit as from input)."""
    if unit.task_type is None:
        given = input_task_type(record, unit.turn)
        if given:
            unit.task_type, unit.task_source = given, "input"
            if record.meta.task_type is None and unit is record.meta.units[0]:
                record.meta.task_type = given
    return unit.task_type


async def attach_evidence(
    record: Record,
    pack: CriteriaPack,
    retriever: Retriever,
    k: int | None = None,
    max_tokens: int | None = None,
    *,
    all_types: bool = False,
) -> Record:
    """Set `query`, `evidence` and `evidence_note` on every unit of `record` (in place).

    A unit gets evidence when its task type's criterion says `retrieval: true` (or always with
    `all_types`); otherwise its note says why not. Search failures become notes, never errors.
    """

    async def one(unit: UnitMeta) -> None:
        task = unit_task_type(record, unit)
        if not all_types:
            if task is None:
                unit.evidence_note = "no task type: run `realign classify` first or use --all-types"
                return
            if task not in pack:
                unit.evidence_note = f"task type '{task}' is not in criteria pack '{pack.name}'"
                return
            if not pack[task].retrieval:
                unit.query, unit.evidence = None, []
                unit.evidence_note = f"retrieval: no for {task}"
                return
        res = await retriever.evidence_for(
            record.instruction_for(unit.turn),
            k,
            max_tokens,
            context=request_context(record, unit.turn),
        )
        unit.query, unit.evidence, unit.evidence_note = res.query, res.evidence, res.note

    await asyncio.gather(*(one(u) for u in ensure_units(record)))
    return record
