"""Instruction/response pairs grounded in document chunks (TuNA-style), ready for `realign run`.

One work item is one chunk; the model returns up to N pairs as structured output. With a
criteria pack (`--typed`), each pair also gets a task type: the JSON schema lists the pack's
names as an enum (so constrained decoding can only emit one of them) but any string validates,
and a name the pack lacks becomes `default`, with the reason kept, instead of being re-asked.

The pairs become `Record`s: the task type goes into the user turn's `category` (ReAlign's own
field, which `realign run` reads instead of classifying again), the link to the source (doc id,
chunk, pair number) into the record's `realign.generated` metadata. Near-duplicate instructions
across the whole output are removed by `dedup.NearDuplicates`, first one kept.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, create_model

from realign import __version__, prompts
from realign.augment.dedup import NearDuplicates
from realign.augment.documents import Chunk, DocumentError
from realign.criteria import CriteriaPack
from realign.llm.base import ChatRequest
from realign.llm.engine import Engine
from realign.records import Failure, Provenance, RealignMeta, Record, Turn
from realign.stages.classify import DEFAULT_TYPE

STAGE = "generate"
TOKENS_PER_PAIR = 200  # output budget per pair asked for (a question and a paragraph answer)
OUTPUT_OVERHEAD = 100


class GenerateItem(BaseModel):
    index: int
    id: str
    chunk: Chunk


class GeneratedPair(BaseModel):
    instruction: str
    response: str
    task_type: str | None = None
    task_note: str = ""  # e.g. why the model's type was replaced by default


class GeneratedChunk(BaseModel):
    """The result of one work item."""

    id: str
    doc_id: str
    chunk: int
    asked: int
    pairs: list[GeneratedPair]


class _Strict(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)


class Pair(_Strict):
    instruction: str = Field(min_length=1, description="What the user asks.")
    response: str = Field(min_length=1, description="The assistant's full answer.")


@functools.cache
def pairs_schema(task_types: tuple[str, ...] | None = None) -> type[BaseModel]:
    """The structured output for a chunk. Cached per set of names: the engine caches JSON
    schemas per class, and one class per run keeps the request cache keys stable."""
    item: type[BaseModel] = Pair
    if task_types:
        item = create_model(
            "TypedPair",
            __base__=_Strict,
            instruction=(str, Field(min_length=1, description="What the user asks.")),
            response=(str, Field(min_length=1, description="The assistant's full answer.")),
            task_type=(str, Field(json_schema_extra={"enum": list(task_types)})),
        )
    return create_model("GeneratedPairs", pairs=(list[item], Field(min_length=1)))  # type: ignore[valid-type]


def work_items(chunks: Iterable[Chunk | DocumentError]) -> Iterator[GenerateItem | Failure]:
    for index, c in enumerate(chunks):
        if isinstance(c, DocumentError):
            yield c.as_failure(index)
        else:
            yield GenerateItem(index=index, id=f"{c.doc_id}:{c.chunk}", chunk=c)


def output_budget(n: int) -> int:
    return n * TOKENS_PER_PAIR + OUTPUT_OVERHEAD


def build_request(
    chunk: Chunk, n: int, pack: CriteriaPack | None, record_id: str | None = None
) -> ChatRequest:
    types = [pack[name] for name in pack.names()] if pack is not None else []
    messages = prompts.render(
        "generate",
        title=chunk.title,
        text=chunk.text,
        n=n,
        task_types=types,
        default_type=DEFAULT_TYPE,
    )
    return ChatRequest(
        stage=STAGE,
        messages=messages,
        max_tokens=output_budget(n),
        temperature=0.7,  # distinct pairs need some variety; the cache keeps reruns identical
        record_id=record_id,
    )


def resolve_type(name: str | None, pack: CriteriaPack) -> tuple[str | None, str]:
    """(task type, note): the model's name when the pack has it, else `default`."""
    name = (name or "").strip()
    if name in pack:
        return name, ""
    if DEFAULT_TYPE in pack:
        return DEFAULT_TYPE, f"model answered {name!r}, not in pack '{pack.name}': used default"
    return None, f"model answered {name!r}, not in pack '{pack.name}', which has no default"


async def generate(
    engine: Engine, item: GenerateItem, n: int, pack: CriteriaPack | None
) -> GeneratedChunk:
    schema = pairs_schema(tuple(pack.names()) if pack is not None else None)
    (out,) = await engine.structured(build_request(item.chunk, n, pack, item.id), schema)
    pairs: list[GeneratedPair] = []
    for p in out.pairs[:n]:  # type: ignore[attr-defined]
        task, note = resolve_type(p.task_type, pack) if pack is not None else (None, "")
        pairs.append(
            GeneratedPair(
                instruction=p.instruction, response=p.response, task_type=task, task_note=note
            )
        )
    return GeneratedChunk(
        id=item.id, doc_id=item.chunk.doc_id, chunk=item.chunk.chunk, asked=n, pairs=pairs
    )


# ---------------------------------------------------------------- records and dedup


class Duplicate(BaseModel):
    """A line of `<OUTPUT stem>.duplicates.jsonl`: a pair removed as a near-duplicate."""

    id: str
    duplicate_of: str
    similarity: float
    doc_id: str
    chunk: int
    instruction: str
    response: str
    task_type: str | None = None


def pair_id(gen: GeneratedChunk, k: int) -> str:
    return f"{gen.doc_id}:{gen.chunk}:{k}"


def to_record(gen: GeneratedChunk, k: int, index: int, fmt: str, provenance: Provenance) -> Record:
    pair = gen.pairs[k]
    rid = pair_id(gen, k)
    extra = {"category": pair.task_type} if pair.task_type else {}
    generated = {"doc_id": gen.doc_id, "chunk": gen.chunk, "pair": k}
    if pair.task_note:
        generated["task_note"] = pair.task_note
    return Record(
        id=rid,
        index=index,
        turns=[
            Turn(role="user", content=pair.instruction, extra=extra),
            Turn(role="assistant", content=pair.response),
        ],
        source_format=fmt,
        raw={"id": rid},
        meta=RealignMeta(provenance=provenance, generated=generated),
    )


def deduplicated(
    chunks: Iterable[GeneratedChunk], threshold: float
) -> Iterator[tuple[GeneratedChunk, int, Duplicate | None]]:
    """(chunk result, pair number, None or why it is a near-duplicate) for every pair, in
    order; the first of a group of near-duplicate instructions is the one kept."""
    index = NearDuplicates(threshold)
    for gen in chunks:
        for k, pair in enumerate(gen.pairs):
            hit = index.check(pair_id(gen, k), pair.instruction)
            dup = None
            if hit is not None:
                dup = Duplicate(
                    id=pair_id(gen, k),
                    duplicate_of=hit[0],
                    similarity=round(hit[1], 3),
                    doc_id=gen.doc_id,
                    chunk=gen.chunk,
                    instruction=pair.instruction,
                    response=pair.response,
                    task_type=pair.task_type,
                )
            yield gen, k, dup


def provenance(model: str | None, backend: str | None, pack: CriteriaPack | None) -> Provenance:
    return Provenance(
        model=model,
        backend=backend,
        criteria_pack=pack.name if pack is not None else None,
        criteria_hash=pack.content_hash if pack is not None else None,
        realign_version=__version__,
    )
