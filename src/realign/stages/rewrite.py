"""Stage 3: rewrite a unit's response to follow its task type's format criterion.

The LLM returns its reasoning, whether the format fits the request at all (adaptive
rewriting: when it does not, the original stays), and the rewritten response. `samples` > 1
asks for several candidates; the selection policy picks one. An answer cut off by the output
budget is asked for once more with twice the budget (`OutputTruncated` if that is cut too).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field

from realign import prompts, tokens
from realign.criteria import Criterion
from realign.llm.base import ChatRequest, ShortText
from realign.llm.engine import Engine, OutputTruncated
from realign.records import Candidate, Evidence, Record
from realign.stages.classify import context_text
from realign.stages.rewrite_text import rewrite_text, text_messages

# A one-letter original still needs room for every part of its criterion's format (an exam
# format has six): the budget never goes under MIN_OUTPUT_TOKENS.
MIN_OUTPUT_TOKENS = 2048
MAX_OUTPUT_TOKENS = 4096
RETRY_OUTPUT_TOKENS = 8192  # the one retry after a cut-off answer
REASONING_TOKENS = 400


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


def output_budget(original: str, criterion: Criterion | None = None) -> int:
    """Room for the reasoning and a rewrite in the criterion's format: twice the original plus
    twice the format's own description, at least MIN_OUTPUT_TOKENS, at most MAX_OUTPUT_TOKENS.
    A model stops when it is done; the budget only has to be large enough not to cut it."""
    fmt = tokens.count(criterion.format) if criterion is not None else 0
    want = 2 * tokens.count(original) + 2 * fmt + REASONING_TOKENS
    return min(MAX_OUTPUT_TOKENS, max(MIN_OUTPUT_TOKENS, want))


def retry_budget(budget: int) -> int:
    return min(RETRY_OUTPUT_TOKENS, 2 * budget)


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
    templates: dict[str, str] | None = None,
    max_tokens: int | None = None,
) -> ChatRequest:
    """`prompt` is the template (a pack may bring its own, see `PackSettings`); `templates`
    given: the pack's own plain-text templates instead (ReAlign's answer style, see
    `rewrite_text`). `temperature` None means greedy for one sample and 0.7 for several, so
    the candidates differ; `max_tokens` None means `output_budget`."""
    original = record.turns[turn].content
    if templates is not None:
        messages = text_messages(
            templates,
            criterion,
            record.instruction_for(turn),
            original,
            evidence,
            force=force,
        )
    else:
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
        max_tokens=max_tokens or output_budget(original, criterion),
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
    templates: dict[str, str] | None = None,
    max_tokens: int | None = None,
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
        templates=templates,
        max_tokens=max_tokens,
    )
    if templates is not None:
        return await rewrite_text(engine, request)
    reasons: list[str | None] = []
    try:
        outs = await engine.structured(
            request, RewriteOutput, raise_truncated=True, finish_reasons=reasons
        )
    except OutputTruncated:
        budget = retry_budget(request.max_tokens or MAX_OUTPUT_TOKENS)
        request = request.model_copy(update={"max_tokens": budget})
        reasons.clear()
        outs = await engine.structured(
            request, RewriteOutput, raise_truncated=True, finish_reasons=reasons
        )
    return [
        Candidate(
            response=o.response.strip(),
            reasoning=o.reasoning,
            format_fits=o.format_fits or force,
            tokens=tokens.count(o.response),
            finish_reason=reasons[i] if i < len(reasons) else None,
        )
        for i, o in enumerate(outs)
    ]
