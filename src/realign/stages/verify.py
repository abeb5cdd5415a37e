"""Stage 4b (`realign run --verify`): the model checks a rewrite the filter rules passed.

Rules catch the ways a rewrite can lose that a pattern can see; a model can also read meaning.
One structured call per rewrite asks whether the rewrite keeps every fact, number, verdict and
code of the original and answers the request. A "no" keeps the original: the decision becomes
rule `verify` with the model's reason. A model that gives no usable answer (invalid output
after the engine's re-asks, or cut off) cannot vouch for the rewrite, so that keeps the
original too. The call goes through `Engine` like every other: cached, rate-limited, counted
in the budget, deferred to the Batch API in batch mode.
"""

from __future__ import annotations

from pydantic import BaseModel

from realign import prompts
from realign.llm.base import ChatRequest, ShortText
from realign.llm.engine import Engine, StructuredOutputError
from realign.records import FilterDecision, Record
from realign.stages.classify import context_text

RULE = "verify"
# The answer is two booleans and one sentence; the schema bounds the sentence (ShortText).
VERIFY_OUTPUT_TOKENS = 256
CONTEXT_TOKENS = 1000


class VerifyOutput(BaseModel):
    """Field order: the verdicts first, then the sentence that names what was lost."""

    keeps_content: bool
    answers_instruction: bool
    reason: ShortText

    @property
    def accepted(self) -> bool:
        return self.keeps_content and self.answers_instruction


def build_request(record: Record, turn: int, original: str, rewrite: str) -> ChatRequest:
    """The verification request for the rewrite of `record`'s assistant turn `turn`. Greedy:
    a check should give the same answer every time (and so hit the cache on a rerun)."""
    messages = prompts.render(
        "verify",
        context=context_text(record, turn, budget=CONTEXT_TOKENS),
        instruction=record.instruction_for(turn),
        original=original,
        rewrite=rewrite,
    )
    return ChatRequest(
        stage="verify",
        messages=messages,
        temperature=0.0,
        max_tokens=VERIFY_OUTPUT_TOKENS,
        record_id=record.id,
    )


def verdict(
    decision: FilterDecision, out: VerifyOutput | None, problem: str = ""
) -> FilterDecision:
    """`decision` (the rules passed) after the model's check: `out` None means the model gave
    no usable answer (`problem` says why)."""
    checked = [*decision.checked, RULE]
    if out is not None and out.accepted:
        reason = f"{decision.reason}; verified: {out.reason}" if out.reason else decision.reason
        return decision.model_copy(update={"checked": checked, "reason": reason})
    if out is None:
        reason = f"the model gave no usable verification ({problem}); kept the original"
    else:
        failed = [
            name
            for name, ok in (
                ("does not keep the original's content", out.keeps_content),
                ("does not answer the request", out.answers_instruction),
            )
            if not ok
        ]
        reason = f"{' and '.join(failed)}: {out.reason}" if out.reason else " and ".join(failed)
    return FilterDecision(
        keep_original=True,
        rule=RULE,
        reason=reason,
        preset=decision.preset,
        checked=checked,
    )


async def verify_rewrite(
    engine: Engine,
    record: Record,
    turn: int,
    original: str,
    rewrite: str,
    decision: FilterDecision,
) -> FilterDecision:
    """The filter's `decision` on a rewrite, checked by the model when the rules passed it."""
    if decision.keep_original:
        return decision
    request = build_request(record, turn, original, rewrite)
    try:
        (out,) = await engine.structured(request, VerifyOutput)
    except StructuredOutputError as e:  # OutputTruncated included
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        return verdict(decision, None, first_line[:200])
    return verdict(decision, out)
