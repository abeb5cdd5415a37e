"""The I/O of `realign rephrase`, `realign generate` and `realign filter` that is not the job
itself: the input's chunks, the `--dry-run` counts, and the output files written from a
finished job's state. The commands (`realign/cli/augment_run.py`) run the jobs with the CLI's
one job runner; the augment modules stay pure functions of their inputs plus engine calls."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from realign import tokens
from realign.augment import documents as docs_mod
from realign.augment import generate as gen
from realign.augment import quality_filter as qf
from realign.augment import rephrase as rp
from realign.criteria import CriteriaPack
from realign.errors import UsageError
from realign.pipeline.estimate import LoadFailures
from realign.pipeline.runner import results
from realign.pipeline.state import RunState
from realign.records import Failure, Provenance, Record


@dataclass(frozen=True)
class ChunkSource:
    """Where the documents are and how they are cut."""

    input: Path
    max_chunk_tokens: int = docs_mod.DEFAULT_MAX_CHUNK_TOKENS
    text_field: str | None = None
    id_field: str = "id"
    limit: int | None = None

    def check(self) -> None:
        if not self.input.exists():
            raise UsageError(f"{self.input}: no such file or folder")
        if self.max_chunk_tokens < 32:
            raise UsageError(f"--max-chunk-tokens {self.max_chunk_tokens}: use at least 32")

    def chunks(self) -> Iterator[docs_mod.Chunk | docs_mod.DocumentError]:
        """The input's chunks (and unusable documents), only the first `limit` of them."""
        try:
            docs = docs_mod.read_documents(
                self.input, text_field=self.text_field, id_field=self.id_field
            )
            stream = docs_mod.iter_chunks(docs, self.max_chunk_tokens)
            yield from islice(stream, self.limit) if self.limit else stream
        except docs_mod.DocumentsError as e:
            raise UsageError(str(e)) from e

    def count(self, on_unusable: Callable[[docs_mod.DocumentError], None]) -> tuple[int, int]:
        """(chunks, unusable documents), for the progress bar; `on_unusable` names each."""
        c = e = 0
        for item in self.chunks():
            if isinstance(item, docs_mod.DocumentError):
                on_unusable(item)
                e += 1
            else:
                c += 1
        return c, e


def chunk_record(item: Any) -> dict[str, Any]:
    return item.chunk.model_dump()  # type: ignore[no-any-return]


# ---------------------------------------------------------------- dry runs


@dataclass
class Estimate:
    """Requests and tokens a dry run counted, how many usable inputs it read, and the
    inputs the run could not use (each would be a `load` failure)."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    inputs: int = 0
    unreadable: LoadFailures = field(default_factory=LoadFailures)


def estimate_rephrase(source: ChunkSource, pack: CriteriaPack, styles: Sequence[str]) -> Estimate:
    est = Estimate()
    for c in source.chunks():
        if isinstance(c, docs_mod.DocumentError):
            est.unreadable.add(str(c))
            continue
        est.inputs += 1
        for s in styles:
            r = rp.build_request(c, pack[s])
            est.requests += 1
            est.tokens_in += sum(tokens.count(m.content) for m in r.messages) + 40  # + schema
            est.tokens_out += int(1.3 * c.tokens) + 20
    return est


def estimate_generate(source: ChunkSource, n: int, pack: CriteriaPack | None) -> Estimate:
    est = Estimate()
    schema = gen.pairs_schema(tuple(pack.names()) if pack else None)
    schema_tokens = tokens.count(json.dumps(schema.model_json_schema()))
    for c in source.chunks():
        if isinstance(c, docs_mod.DocumentError):
            est.unreadable.add(str(c))
            continue
        est.inputs += 1
        r = gen.build_request(c, n, pack)
        est.requests += 1
        est.tokens_in += sum(tokens.count(m.content) for m in r.messages) + schema_tokens
        est.tokens_out += min(gen.output_budget(n), n * 150)
    return est


def estimate_filter(
    items: Iterable[Record | Failure], aspects: Sequence[str], pack: CriteriaPack | None
) -> Estimate:
    from realign import judge

    est = Estimate()
    schema_tokens = tokens.count(json.dumps(judge.PointwiseOutput.model_json_schema()))
    for rec in items:
        if isinstance(rec, Failure):
            est.unreadable.add(rec.error)
            continue
        est.inputs += 1
        for u in judge.units_of(rec):
            for a in aspects:
                r = judge.pointwise_request(u, a, pack=pack, reference=None)
                est.requests += 1
                est.tokens_in += sum(tokens.count(m.content) for m in r.messages) + schema_tokens
                est.tokens_out += qf.ESTIMATED_OUTPUT_TOKENS
    return est


# ---------------------------------------------------------------- outputs


def write_jsonl(path: Path, lines: Iterable[dict[str, Any]]) -> int:
    """JSON Lines written whole or not at all (a partial file never replaces the output)."""
    tmp = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def write_rephrased(
    state: RunState,
    source: ChunkSource,
    output: Path,
    *,
    source_text: bool,
    ratio: tuple[int, int] | None,
    n_chunks: int,
) -> int:
    """The rephrasings, or with `ratio` the real:synthetic mix; the lines written."""

    def synthetic() -> Iterator[dict[str, Any]]:
        for r in results(state, rp.Rephrasing):
            yield rp.synthetic_line(r, source_text)

    def real() -> Iterator[dict[str, Any]]:
        for c in source.chunks():
            if isinstance(c, docs_mod.Chunk):
                yield rp.real_line(c)

    if ratio is None:
        return write_jsonl(output, synthetic())
    n_syn = state.count(ok=True)
    return write_jsonl(output, rp.mix(real, synthetic, (n_chunks, n_syn), ratio))


@dataclass
class Written:
    """What an output writer wrote: counts, per-type tallies and the records it rejected."""

    kept: int = 0
    dropped: int = 0  # near-duplicates (generate), records under the bar (filter)
    short: int = 0  # generate: pairs fewer than asked
    types: Counter[str] = field(default_factory=Counter)
    per_type: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def rejected(self, errors: Iterable[Any]) -> None:
        self.failures.extend(e.as_failure("write") for e in errors)


def write_generated(
    state: RunState,
    output: Path,
    dup_path: Path,
    output_format: str,
    dedup_threshold: float,
    prov: Provenance,
) -> Written:
    """The generated pairs as records (near-duplicates to `dup_path`), in input order."""
    from realign.io.errors import RecordWriteError
    from realign.io.formats import FormatError
    from realign.io.write import JsonlAppender, RecordWriter

    dup_path.unlink(missing_ok=True)  # never leave a stale one from an earlier run
    out = Written()
    try:
        with RecordWriter(output, output_format) as writer, JsonlAppender(dup_path) as dup_file:
            last_chunk = None
            for chunk_result, k, dup in gen.deduplicated(
                results(state, gen.GeneratedChunk), dedup_threshold
            ):
                if chunk_result.id != last_chunk:
                    last_chunk = chunk_result.id
                    out.short += max(0, chunk_result.asked - len(chunk_result.pairs))
                if dup is not None:
                    dup_file.write(dup.model_dump(mode="json"))
                    out.dropped += 1
                    continue
                record = gen.to_record(chunk_result, k, out.kept, output_format, prov)
                try:
                    writer.write(record)
                    out.kept += 1
                    out.types[chunk_result.pairs[k].task_type or "(untyped)"] += 1
                except RecordWriteError as e:
                    out.rejected([e.error])
                out.rejected(writer.take_rejected())
        out.rejected(writer.take_rejected())
    except FormatError as e:
        raise UsageError(str(e)) from e
    return out


def write_filtered(
    state: RunState, output: Path, dropped_path: Path, output_format: str | None, fields: Any
) -> Written:
    """Kept records to `output`, dropped ones to `dropped_path`, both with their scores."""
    from realign.io.errors import RecordWriteError
    from realign.io.formats import FormatError
    from realign.io.write import RecordWriter

    out = Written()
    try:
        with (
            RecordWriter(output, output_format, fields, source_fields=fields) as kept_w,
            RecordWriter(dropped_path, output_format, fields, source_fields=fields) as drop_w,
        ):
            for f in results(state, qf.Filtered):
                writer = kept_w if f.verdict.kept else drop_w
                try:
                    writer.write(f.record)
                    verdict = "kept" if f.verdict.kept else "dropped"
                    out.per_type.setdefault(f.task_type, Counter())[verdict] += 1
                except RecordWriteError as e:
                    out.rejected([e.error])
                out.rejected(kept_w.take_rejected())
                out.rejected(drop_w.take_rejected())
        out.rejected(kept_w.take_rejected())
        out.rejected(drop_w.take_rejected())
    except FormatError as e:
        raise UsageError(str(e)) from e
    out.kept = sum(c["kept"] for c in out.per_type.values())
    out.dropped = sum(c["dropped"] for c in out.per_type.values())
    return out
