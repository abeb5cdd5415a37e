"""Typed records that flow one way through the pipeline stages.

A `Record` is format-neutral: readers in `formats.py` build it from any supported dataset
shape and writers turn it back. Everything realign adds lives in `Record.meta`
(`RealignMeta`), which is written to the single top-level `realign` key of each output record.

Multi-turn design (documented in the README): every assistant turn is a *unit*. A unit is
classified, retrieved for, rewritten and filtered on its own, with the turns before it as
context. `RealignMeta.units` holds one `UnitMeta` per assistant turn, in turn order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from realign.credentials import redact
from realign.values import pack, readable, unpack

Role = Literal["system", "user", "assistant"]

# Status of one unit (and, aggregated, of a record).
#   rewritten: the realigned response replaced the original
#   kept:      a rewrite was tried but the original stays (filter rule, format does not fit, …)
#   skipped:   no rewrite attempted (criterion says `rewrite: no`, task not selected, …)
#   failed:    an error; the record goes to the failures file
Status = Literal["pending", "rewritten", "kept", "skipped", "failed"]


def _unpacked(v: Any, info: ValidationInfo) -> Any:
    """Undo `pack` when a model is read back from JSON (the run state)."""
    return unpack(v) if info.mode == "json" else v


class Turn(BaseModel):
    """One message. `extra` keeps unknown per-turn keys of the input (e.g. ReAlign's `category`)."""

    role: Role
    content: str
    extra: dict[str, Any] = Field(default_factory=dict)

    # Values JSON cannot hold (bytes, dates, NaN, ...) survive the run state unchanged.
    @field_serializer("extra", when_used="json")
    def _pack_extra(self, v: dict[str, Any]) -> Any:
        return pack(v)

    @field_validator("extra", mode="before")
    @classmethod
    def _unpack_extra(cls, v: Any, info: ValidationInfo) -> Any:
        return _unpacked(v, info)


class Evidence(BaseModel):
    """One cleaned search snippet with its source."""

    snippet: str
    title: str = ""
    url: str = ""
    provider: str = ""
    # The search engine's own answer (Serper's answer box / knowledge graph): often only a
    # name or a date ("2013", "Kyrsten Sinema"), so cleaning keeps it however short it is.
    answer: bool = False


class Candidate(BaseModel):
    """One rewrite produced by the LLM."""

    response: str
    reasoning: str = ""
    format_fits: bool = True
    tokens: int = 0
    # The model's own finish reason ("stop", "length" = cut off by the output budget); the
    # filter keeps the original of a cut-off rewrite. None when the backend gives none.
    finish_reason: str | None = None


class FilterDecision(BaseModel):
    """What the rule-based filter decided, with the name of the rule that decided it."""

    keep_original: bool
    rule: str  # e.g. "passed", "length_ratio", "code_mismatch", "final_answer_lost"
    reason: str = ""
    preset: str = "default"  # the filter preset (`--filter-preset`)
    checked: list[str] = Field(default_factory=list)  # the preset's rules, in the order run


class JudgeScore(BaseModel):
    score: int = Field(ge=1, le=10)
    rationale: str = ""


class UnitMeta(BaseModel):
    """Everything realign decided about one assistant turn."""

    turn: int  # index into Record.turns of the assistant turn
    task_type: str | None = None
    task_source: Literal["input", "llm", "embedding", "default"] | None = None
    task_confidence: float | None = None
    task_reason: str = ""
    status: Status = "pending"
    reason: str = ""  # why the status is what it is, in words
    original: str | None = None  # the original response when it was replaced or considered
    query: str | None = None  # the search query used for evidence
    evidence: list[Evidence] = Field(default_factory=list)
    evidence_note: str = ""  # e.g. "retrieval: no for this task type", "provider quota exceeded"
    candidates: list[Candidate] = Field(default_factory=list)
    chosen: int | None = None  # index into candidates
    filter: FilterDecision | None = None


class Provenance(BaseModel):
    model: str | None = None
    backend: str | None = None
    criteria_pack: str | None = None
    criteria_folder: str | None = None  # the --criteria folder, when one was given
    pack_hash: str | None = None  # the whole method: criteria, pack.yaml, templates
    criteria_name: str | None = None
    criteria_hash: str | None = None
    # The command line that ran (flags given explicitly, in order), for a dataset card's
    # "how to reproduce"; None when run from the Python API.
    command: str | None = None
    realign_version: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))


class RealignMeta(BaseModel):
    """The content of an output record's top-level `realign` key."""

    model_config = ConfigDict(extra="allow")  # later stages / future versions may add keys

    task_type: str | None = None  # of the first unit; per-unit types are in `units`
    status: Status = "pending"
    reason: str = ""
    units: list[UnitMeta] = Field(default_factory=list)
    scores: dict[str, JudgeScore] = Field(default_factory=dict)
    provenance: Provenance | None = None


class Record(BaseModel):
    """A format-neutral SFT record.

    `raw` is the input object exactly as read; writers that emit the input's own format patch
    it (assistant contents and the `realign` key) so unknown fields survive untouched.
    """

    id: str
    index: int  # 0-based position in the input, used for ordering and resume
    turns: list[Turn]
    source_format: str
    raw: dict[str, Any] = Field(default_factory=dict)
    meta: RealignMeta = Field(default_factory=RealignMeta)

    @field_serializer("raw", when_used="json")
    def _pack_raw(self, v: dict[str, Any]) -> Any:
        return pack(v)

    @field_validator("raw", mode="before")
    @classmethod
    def _unpack_raw(cls, v: Any, info: ValidationInfo) -> Any:
        return _unpacked(v, info)

    def assistant_turns(self) -> list[int]:
        return [i for i, t in enumerate(self.turns) if t.role == "assistant"]

    def instruction_for(self, turn: int) -> str:
        """The user message that the assistant turn `turn` answers ('' when there is none)."""
        for i in range(turn - 1, -1, -1):
            if self.turns[i].role == "user":
                return self.turns[i].content
        return ""

    @property
    def instruction(self) -> str:
        """The instruction of the first unit."""
        a = self.assistant_turns()
        return (
            self.instruction_for(a[0])
            if a
            else next((t.content for t in self.turns if t.role == "user"), "")
        )

    @property
    def response(self) -> str:
        """The first assistant response ('' when there is none)."""
        a = self.assistant_turns()
        return self.turns[a[0]].content if a else ""


def ensure_units(record: Record) -> list[UnitMeta]:
    """The record's units, created (one per assistant turn, in order) when it has none yet."""
    if not record.meta.units:
        record.meta.units = [UnitMeta(turn=i) for i in record.assistant_turns()]
    return record.meta.units


def input_task_type(record: Record, turn: int) -> str | None:
    """The task type the input itself gives for assistant turn `turn`, if any.

    ReAlign puts it as `category` on the human turn; flat datasets as a top-level `category`
    or `task_type`.
    """
    for i in range(min(turn, len(record.turns)) - 1, -1, -1):
        if record.turns[i].role == "user":
            cat = record.turns[i].extra.get("category")
            if isinstance(cat, str) and cat.strip():
                return cat.strip()
            break
    for key in ("category", "task_type"):
        cat = record.raw.get(key)
        if isinstance(cat, str) and cat.strip():
            return cat.strip()
    return None


class Failure(BaseModel):
    """A line of `<OUTPUT stem>.failures.jsonl`."""

    id: str
    index: int
    stage: str
    error: str
    raw_output: str | None = None
    record: dict[str, Any] = Field(default_factory=dict)

    # The failures file is for people and other tools: plain JSON, whatever the record held.
    @field_serializer("record", when_used="json")
    def _readable_record(self, v: dict[str, Any]) -> Any:
        return readable(v)

    @field_validator("error")
    @classmethod
    def _no_keys(cls, error: str) -> str:
        # Whatever raised, the failures file and the run state never carry an API key.
        return redact(error)
