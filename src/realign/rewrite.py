"""Stage 3: rewrite a unit's response to follow its task type's format criterion.

The LLM returns its reasoning, whether the format fits the request at all (adaptive
rewriting: when it does not, the original stays), and the rewritten response. `samples` > 1
asks for several candidates; the selection policy picks one.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from realign import prompts, tokens
from realign.classify import context_text
from realign.criteria import Criterion
from realign.engine import Engine
from realign.llm.base import ChatRequest, ShortText
from realign.records import Candidate, Evidence, Record

MAX_OUTPUT_TOKENS = 4096


class RewriteOutput(BaseModel):
    """Field order matters: the model reasons and decides fit before writing the response."""

    reasoning: ShortText = Field(description="One or two sentences.")
    format_fits: bool
    response: str


def longest(cands: list[Candidate]) -> int | None:
    """ReAlign's rule: the longest fitting candidate, by tokens (first wins ties)."""
    best: int | None = None
    for i, c in enumerate(cands):
        if c.format_fits and (best is None or c.tokens > cands[best].tokens):
            best = i
    return best


def first(cands: list[Candidate]) -> int | None:
    return next((i for i, c in enumerate(cands) if c.format_fits), None)


SELECTION_POLICIES: dict[str, Callable[[list[Candidate]], int | None]] = {
    "longest": longest,
    "first": first,
}


def output_budget(original: str) -> int:
    """Room for a longer, better formatted answer plus the reasoning."""
    return min(MAX_OUTPUT_TOKENS, 2 * tokens.count(original) + 400)


def build_request(
    record: Record,
    turn: int,
    criterion: Criterion,
    evidence: list[Evidence],
    *,
    force: bool,
    samples: int,
    prompt: str = "rewrite",
    temperature: float | None = None,
) -> ChatRequest:
    """`prompt` is the template (a pack may bring its own, see `PackSettings`); `temperature`
    None means greedy for one sample and 0.7 for several, so the candidates differ."""
    original = record.turns[turn].content
    messages = prompts.render(
        prompt,
        task_type=criterion.name,
        format=criterion.format,
        context=context_text(record, turn, budget=1000),
        instruction=record.instruction_for(turn),
        response=original,
        evidence=evidence,
        force=force,
    )
    return ChatRequest(
        stage="rewrite",
        messages=messages,
        n=samples,
        temperature=temperature if temperature is not None else (0.0 if samples == 1 else 0.7),
        max_tokens=output_budget(original),
        record_id=record.id,
    )


async def rewrite_unit(
    engine: Engine,
    record: Record,
    turn: int,
    criterion: Criterion,
    evidence: list[Evidence],
    *,
    force: bool = False,
    samples: int = 1,
    prompt: str = "rewrite",
    temperature: float | None = None,
) -> list[Candidate]:
    request = build_request(
        record,
        turn,
        criterion,
        evidence,
        force=force,
        samples=samples,
        prompt=prompt,
        temperature=temperature,
    )
    outs = await engine.structured(request, RewriteOutput)
    return [
        Candidate(
            response=o.response.strip(),
            reasoning=o.reasoning,
            format_fits=o.format_fits or force,
            tokens=tokens.count(o.response),
        )
        for o in outs
    ]
