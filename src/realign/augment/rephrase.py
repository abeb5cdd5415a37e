"""WRAP rephrasing: each chunk of a document in each chosen style of the `wrap` criteria pack.

A style is a criteria file (`criteria/wrap/<style>.md`): its Markdown body is the instruction
the model follows, so users edit or add styles like any task type (`--criteria DIR`). One work
item is one (chunk, style); its result links back to the document id and chunk index.

`--mix R:S` builds the training mix WRAP uses: R real chunks for every S synthetic rephrasings,
interleaved in blocks. Nothing is left out: the side that runs short is cycled again from its
start (each extra copy carries `repeat`), so every chunk and every rephrasing appears at least
once and the ratio holds exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field

from realign import prompts
from realign.augment.documents import Chunk, DocumentError
from realign.criteria import Criterion
from realign.llm.base import ChatRequest
from realign.llm.engine import Engine
from realign.records import Failure

STAGE = "rephrase"
REAL_STYLE = "original"  # the `style` of a real chunk in the mixed corpus


class RephraseOutput(BaseModel):
    text: str = Field(min_length=1, description="The complete rephrased piece.")


class RephraseItem(BaseModel):
    index: int  # position in the stream of work items (stable across reruns)
    id: str
    chunk: Chunk
    style: str


class Rephrasing(BaseModel):
    """One line of the output."""

    id: str
    doc_id: str
    chunk: int
    style: str
    text: str
    source_text: str
    criteria_hash: str


def item_id(chunk: Chunk, style: str) -> str:
    return f"{chunk.doc_id}:{chunk.chunk}:{style}"


def work_items(
    chunks: Iterable[Chunk | DocumentError], styles: list[str]
) -> Iterator[RephraseItem | Failure]:
    """One item per (chunk, style), in document order; unusable documents become failures."""
    index = 0
    for c in chunks:
        if isinstance(c, DocumentError):
            yield c.as_failure(index)
            index += 1
            continue
        for style in styles:
            yield RephraseItem(index=index, id=item_id(c, style), chunk=c, style=style)
            index += 1


def output_budget(chunk_tokens: int) -> int:
    """max_tokens for one rephrasing: the qa style runs about twice the source's length."""
    return 2 * chunk_tokens + 200


def build_request(chunk: Chunk, crit: Criterion, record_id: str | None = None) -> ChatRequest:
    messages = prompts.render(
        "rephrase", style=crit.name, instruction=crit.format, title=chunk.title, text=chunk.text
    )
    return ChatRequest(
        stage=STAGE,
        messages=messages,
        max_tokens=output_budget(chunk.tokens),
        record_id=record_id,
    )


async def rephrase(engine: Engine, item: RephraseItem, crit: Criterion) -> Rephrasing:
    (out,) = await engine.structured(build_request(item.chunk, crit, item.id), RephraseOutput)
    return Rephrasing(
        id=item.id,
        doc_id=item.chunk.doc_id,
        chunk=item.chunk.chunk,
        style=item.style,
        text=out.text.strip(),
        source_text=item.chunk.text,
        criteria_hash=crit.content_hash,
    )


# ---------------------------------------------------------------- the mixed corpus


def parse_ratio(spec: str) -> tuple[int, int]:
    """'1:1' → (1, 1). Raises ValueError with the expected form."""
    parts = spec.split(":")
    try:
        real, synthetic = (int(p) for p in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        real = synthetic = 0
    if real < 1 or synthetic < 1:
        raise ValueError(
            f"{spec!r} is not a ratio REAL:SYNTHETIC of positive whole numbers (e.g. 1:1, 1:4)"
        )
    return real, synthetic


def real_line(chunk: Chunk) -> dict[str, Any]:
    return {
        "id": f"{chunk.doc_id}:{chunk.chunk}:{REAL_STYLE}",
        "doc_id": chunk.doc_id,
        "chunk": chunk.chunk,
        "style": REAL_STYLE,
        "synthetic": False,
        "text": chunk.text,
    }


def synthetic_line(r: Rephrasing, with_source: bool) -> dict[str, Any]:
    out = r.model_dump(exclude={"source_text", "criteria_hash"})
    out["synthetic"] = True
    if with_source:
        out["source_text"] = r.source_text
    return out


def _cycled(make: Callable[[], Iterator[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """The lines of `make()`, then again from the start, forever; copies carry `repeat`."""
    rounds = 0
    while True:
        empty = True
        for line in make():
            empty = False
            yield {**line, "repeat": rounds} if rounds else line
        if empty:
            return
        rounds += 1


def mix(
    real: Callable[[], Iterator[dict[str, Any]]],
    synthetic: Callable[[], Iterator[dict[str, Any]]],
    counts: tuple[int, int],
    ratio: tuple[int, int],
) -> Iterator[dict[str, Any]]:
    """Blocks of `ratio[0]` real then `ratio[1]` synthetic lines until both sides were used
    whole; `counts` are how many lines each factory yields. Streams (re-reading, not storing)."""
    n_real, n_syn = counts
    r, s = ratio
    if not n_real or not n_syn:  # nothing to mix with: what there is, once
        yield from real() if n_real else synthetic()
        return
    blocks = max(math.ceil(n_real / r), math.ceil(n_syn / s))
    real_it, syn_it = _cycled(real), _cycled(synthetic)
    for _ in range(blocks):
        for _ in range(r):
            yield next(real_it)
        for _ in range(s):
            yield next(syn_it)
