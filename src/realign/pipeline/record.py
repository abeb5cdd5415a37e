"""`realign run`: classify → retrieve → rewrite → filter, streamed, resumable, in input order.

Records are read lazily and processed concurrently inside a bounded window, so memory does
not grow with the dataset. Each finished record (or failure) is committed to the run state
(`state.py`); the output and failures files are written from it in input order at the end.
Every input record ends in exactly one of the two files.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realign import __version__, tokens
from realign.criteria import CriteriaPack
from realign.io.formats import input_evidence
from realign.llm.engine import Deferred, Engine, OutputTruncated, StructuredOutputError
from realign.pipeline.runner import STOPS, StageError, process_items
from realign.pipeline.state import RunState, atomic_text
from realign.pipeline.summary import RunSummary as RunSummary  # re-exported: the run's tally
from realign.records import (
    Failure,
    FilterDecision,
    Provenance,
    Record,
    Status,
    UnitMeta,
    ensure_units,
)
from realign.stages.classify import (
    DEFAULT_TYPE,
    EMBED_BATCH,
    EmbeddingPredictor,
    classify_unit,
    pretype_offline,
)
from realign.stages.filter import DEFAULT_PRESET, decide
from realign.stages.retrieve_query import request_context
from realign.stages.rewrite import SELECTION_POLICIES, rewrite_unit
from realign.stages.verify import verify_rewrite

MAX_RESPONSE_TOKENS = 3000  # longer originals are passed through: a rewrite would not fit


@dataclass
class RunOptions:
    tasks: frozenset[str] | None = None  # only rewrite these task types
    samples: int = 1
    force: bool = False
    reclassify: bool = False
    selection: str = "longest"
    prompt: str = "rewrite"  # the rewrite template; a pack's `pack.yaml` may choose another
    # `realign-text`: the pack's own plain-text templates, read as ReAlign reads them
    answer_style: str = "json"
    max_tokens: int | None = None  # the rewrite's output limit; None: `rewrite.output_budget`
    temperature: float | None = None  # None: greedy for one sample, 0.7 for several
    limit: int | None = None
    min_confidence: float = 0.5
    max_response_tokens: int = MAX_RESPONSE_TOKENS
    retrieve_k: int = 5
    max_evidence_tokens: int = 600
    classify_only: bool = False
    filter_preset: str = DEFAULT_PRESET
    verify: bool = False  # --verify: the model checks each rewrite the rules passed

    def fingerprint_data(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["tasks"] = sorted(self.tasks) if self.tasks else None
        return d


@dataclass
class Stages:
    """Everything a record needs on its way through; built once per run."""

    pack: CriteriaPack
    engine: Engine | None  # None: no LLM (e.g. classify with embeddings only)
    options: RunOptions
    embedding: EmbeddingPredictor | None = None
    retriever: Any | None = None  # realign.stages.retrieve.Retriever
    model: str | None = None
    backend: str | None = None
    command: str | None = None  # recorded in provenance; not part of the fingerprint
    # Criterion name -> content hash for provenance: hashing dumps the criterion as YAML
    # (~1.5 ms), the same few criteria for every record.
    criteria_hashes: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    pack_hash: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.pack_hash = self.pack.pack_hash  # hashing every criterion: once per run

    def fingerprint_data(self) -> dict[str, Any]:
        """What identifies a run's work apart from its input (`runner.fingerprint("run", …)`)."""
        return {
            "options": self.options.fingerprint_data(),
            "pack": self.pack.content_hash,
            "method": self.pack_hash,  # settings and templates too
            "model": self.model,
            "backend": self.backend,
        }

    def criteria_hash(self, name: str) -> str:
        if name not in self.criteria_hashes:
            self.criteria_hashes[name] = self.pack[name].content_hash
        return self.criteria_hashes[name]


# ---------------------------------------------------------------- one record


@contextlib.asynccontextmanager
async def stage_errors(stage: str) -> AsyncIterator[None]:
    """Name the stage in any error a record hits there (run-wide stops pass through)."""
    try:
        yield
    except (*STOPS, StageError, Deferred):
        raise
    except Exception as e:
        raw = e.raw_output if isinstance(e, StructuredOutputError) else None
        raise StageError(stage, f"{type(e).__name__}: {e}", raw) from e


def _skip(unit: UnitMeta, reason: str) -> None:
    unit.status, unit.reason = "skipped", reason


def skip_reason(
    pack: CriteriaPack, opts: RunOptions, task: str | None, instruction: str, original: str
) -> str | None:
    """Why a unit of this task type is not rewritten, None when it is; the `--dry-run`
    estimate asks the same question. `task` None: not classified yet (only the rules that
    need no task type apply)."""
    if task is not None and opts.tasks is not None and task not in opts.tasks:
        return f"task type '{task}' not selected by --tasks"
    if not instruction.strip():
        return "empty instruction"
    if not original.strip():
        return "empty response"
    if task is not None and not pack[task].rewrite:
        # Even with --force: such a criterion describes good responses but prescribes no
        # format, so there is nothing to rewrite towards.
        return f"criterion '{task}' says rewrite: no"
    n_tokens = tokens.count(original)
    if n_tokens > opts.max_response_tokens:
        return f"response has {n_tokens} tokens, over the {opts.max_response_tokens} limit"
    return None


def text_templates(stages: Stages) -> dict[str, str] | None:
    """The pack's own templates when the run asks in ReAlign's plain-text style, else None."""
    return stages.pack.templates if stages.options.answer_style == "realign-text" else None


async def process_unit(stages: Stages, record: Record, unit: UnitMeta) -> None:
    opts, pack = stages.options, stages.pack
    instruction = record.instruction_for(unit.turn)
    original = record.turns[unit.turn].content

    async with stage_errors("classify"):
        await classify_unit(stages.engine, pack, record, unit, reclassify=opts.reclassify)
    if opts.classify_only:
        _skip(unit, "classify only")
        return

    task = unit.task_type or DEFAULT_TYPE
    if task not in pack:
        # The classifier may name a type the active pack lacks (e.g. a user pack).
        unit.task_reason += f"; criteria pack '{pack.name}' has no '{task}': used default"
        task = unit.task_type = DEFAULT_TYPE
        if task not in pack:
            return _skip(unit, f"criteria pack '{pack.name}' has neither '{task}' nor default")
    crit = pack[task]
    reason = skip_reason(pack, opts, task, instruction, original)
    if reason is not None:
        return _skip(unit, reason)
    if stages.engine is None:
        return _skip(unit, "no LLM configured")

    evidence = unit.evidence  # attached earlier by `realign retrieve`, if it was run
    if not evidence:
        # ReAlign's data may carry its own search results: use them as ReAlign does, for any
        # task type, instead of searching again.
        evidence = input_evidence(record, unit.turn)
        if evidence:
            unit.evidence = evidence
            unit.evidence_note = "evidence given in the input: no search"
    if not evidence and crit.retrieval:
        if stages.retriever is not None:
            async with stage_errors("retrieve"):
                result = await stages.retriever.evidence_for(
                    instruction,
                    k=opts.retrieve_k,
                    context=request_context(record, unit.turn),  # later turns need theirs
                )
            unit.query, unit.evidence, unit.evidence_note = (
                result.query,
                result.evidence,
                result.note,
            )
            evidence = result.evidence
        else:
            unit.evidence_note = "retrieval is off (--retrieval none)"

    async with stage_errors("rewrite"):
        try:
            cands = await rewrite_unit(
                stages.engine,
                record,
                unit.turn,
                crit,
                evidence,
                force=opts.force,
                samples=opts.samples,
                prompt=opts.prompt,
                temperature=opts.temperature,
                templates=text_templates(stages),
                max_tokens=opts.max_tokens,
            )
        except OutputTruncated as e:
            # Cut off twice, the second time with a larger budget: a model that has not
            # finished by then is looping; the original is the better answer.
            unit.original = original
            unit.status = "kept"
            unit.reason = f"truncated: {e}; kept the original after one retry"
            return
    unit.candidates = cands
    unit.original = original
    chosen = SELECTION_POLICIES[opts.selection](cands)
    if chosen is None:
        unit.status = "kept"
        unit.reason = "the model judged that the format does not fit this request"
        return
    unit.chosen = chosen
    decision = decide(
        instruction,
        original,
        cands[chosen].response,
        task,
        opts.filter_preset,
        pack=pack,
        # Facts the rewrite may take from elsewhere than the original: the search evidence
        # and the conversation so far (invented_content, off_topic).
        evidence=[f"{e.title}\n{e.snippet}" for e in evidence],
        context="\n".join(t.content for t in record.turns[: unit.turn]),
        finish_reason=cands[chosen].finish_reason,
    )
    decision = await verified(stages, record, unit, cands[chosen].response, decision)
    unit.filter = decision
    if decision.keep_original:
        unit.status, unit.reason = "kept", f"{decision.rule}: {decision.reason}"
        return
    record.turns[unit.turn].content = cands[chosen].response
    unit.status, unit.reason = "rewritten", cands[chosen].reasoning


async def verified(
    stages: Stages, record: Record, unit: UnitMeta, rewrite: str, decision: FilterDecision
) -> FilterDecision:
    """With `--verify`, a rewrite the rules passed is checked by the model too (`verify`)."""
    if not stages.options.verify or stages.engine is None or decision.keep_original:
        return decision
    async with stage_errors("verify"):
        return await verify_rewrite(
            stages.engine, record, unit.turn, unit.original or "", rewrite, decision
        )


def aggregate(units: list[UnitMeta]) -> tuple[Status, str]:
    for status in ("failed", "rewritten", "kept", "skipped"):
        hits = [u for u in units if u.status == status]
        if hits:
            return status, hits[0].reason  # type: ignore[return-value]
    return "skipped", "no assistant turn to realign"


async def process_record(stages: Stages, record: Record) -> Record:
    ensure_units(record)
    # Units run in order: a later turn's context is the original conversation, which is what
    # the user saw when it was written.
    for unit in record.meta.units:
        await process_unit(stages, record, unit)
    meta = record.meta
    meta.status, meta.reason = aggregate(meta.units)
    meta.task_type = meta.units[0].task_type if meta.units else None
    crit = stages.pack.criteria.get(meta.task_type or "")
    meta.provenance = Provenance(
        model=stages.model,
        backend=stages.backend,
        criteria_pack=stages.pack.name,
        criteria_folder=stages.pack.folder,
        pack_hash=stages.pack_hash,
        criteria_name=crit.name if crit else None,
        criteria_hash=stages.criteria_hash(meta.task_type or "") if crit else None,
        command=stages.command,
        realign_version=__version__,
    )
    return record


# ---------------------------------------------------------------- the run


def failures_path(output: Path) -> Path:
    from realign.io.compress import side_path

    return side_path(output, "failures")


def pretyped(
    items: Iterable[Record | Failure],
    pack: CriteriaPack,
    embedding: EmbeddingPredictor | None,
    skip: Callable[[int], bool],
    *,
    min_confidence: float = 0.0,
    reclassify: bool = False,
) -> Iterator[Record | Failure]:
    """`items` unchanged, but with units typed by the offline classifier in batches of
    EMBED_BATCH first (one embedding call per batch, not per record); records for which
    `skip(index)` is true (done in an earlier run) are not typed again."""
    if embedding is None:
        yield from items
        return
    batch: list[Record | Failure] = []

    def flush() -> list[Record | Failure]:
        todo = [x for x in batch if isinstance(x, Record) and not skip(x.index)]
        pretype_offline(todo, pack, embedding, min_confidence=min_confidence, reclassify=reclassify)
        out = list(batch)
        batch.clear()
        return out

    for item in items:
        batch.append(item)
        if len(batch) >= EMBED_BATCH:
            yield from flush()
    yield from flush()


async def run_records(
    stages: Stages,
    items: Iterable[Record | Failure],
    state: RunState,
    summary: RunSummary,
    *,
    window: int,
    on_done: Callable[[Record | Failure], None] | None = None,
) -> None:
    """Process `items` (records, or read failures) into `state`, at most `window` at a time."""

    def done(out: Any) -> None:
        summary.count(out)
        if on_done is not None:
            on_done(out)

    counts = await process_items(
        pretyped(
            items,
            stages.pack,
            stages.embedding,
            state.is_done,
            min_confidence=stages.options.min_confidence,
            reclassify=stages.options.reclassify,
        ),
        state,
        lambda rec: process_record(stages, rec),
        stage="pipeline",
        window=window,
        record_of=lambda rec: rec.raw,
        limit=stages.options.limit,
        on_done=done,
    )
    summary.read, summary.resumed, summary.pending = counts.read, counts.resumed, counts.pending


def write_outputs(
    state: RunState,
    output: Path,
    open_writer: Callable[[Path], Any],
    on_written: Callable[[Record], None] | None = None,
    on_failed: Callable[[Failure], None] | None = None,
) -> tuple[int, int, Path]:
    """Write the output (records in input order) and the failures file from the run state.

    Both files are written atomically (renamed into place when complete), the output first: a
    kill leaves the previous files and the run state, and the rerun writes both again. The
    failures file is removed when no record failed (a stale one never lingers). A record
    the output format cannot hold is not dropped: it goes to the failures file with stage
    `write`. `on_written` sees each record the writer accepted (e.g. to total what the output
    holds), `on_failed` each line of the failures file, in file order (e.g. to show the first
    few errors).
    """
    from realign.io.errors import RecordWriteError

    fails = failures_path(output)
    written = failed = 0
    with atomic_text(fails) as f:

        def fail(line: Failure) -> None:
            nonlocal failed
            f.write(line.model_dump_json() + "\n")
            failed += 1
            if on_failed is not None:
                on_failed(line)

        def rejected(errors: Iterable[Any]) -> None:
            for e in errors:
                fail(e.as_failure("write"))

        with open_writer(output) as writer:
            for payload in state.iter_payloads(ok=True):
                record = Record.model_validate_json(payload)
                try:
                    writer.write(record)
                    written += 1
                except RecordWriteError as e:
                    rejected([e.error])
                    continue
                if on_written is not None:
                    on_written(record)
                late = writer.take_rejected()
                written -= len(late)
                rejected(late)
        late = writer.take_rejected()
        written -= len(late)
        rejected(late)
        for payload in state.iter_payloads(ok=False):
            fail(Failure.model_validate_json(payload))
    if not failed:
        fails.unlink(missing_ok=True)
    return written, failed, fails
