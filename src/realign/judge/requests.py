"""The judge's requests and answers: aspects and their rubrics, pointwise and pairwise
prompts, the structured outputs, and running many calls with failures kept as data."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Literal

from pydantic import BaseModel, Field

from realign import metrics, prompts, tokens
from realign.criteria import CriteriaPack
from realign.judge.text_style import (
    TextJudgeRequest,
    pairwise_text_request,
    pointwise_text_request,
    text_verdict,
)
from realign.judge.units import UNKNOWN_TASK, Unit
from realign.llm.base import BackendError, ChatRequest
from realign.llm.engine import Engine, StructuredOutputError

DEFAULT_JUDGE_MODEL = "gpt-4o"
DEFAULT_ASPECTS = ("alignment", "factuality", "readability")
RESPONSE_BUDGET = 3000  # tokens of each response shown to the judge
OUTPUT_TOKENS = 400  # a short rationale and a score fit easily

Outcome = Literal["win", "tie", "lose"]
Side = Literal["a", "b", "tie"]
Progress = Callable[[int], None]  # told the number of calls planned / just finished


# --- aspects and structured outputs -------------------------------------------------------


def available_aspects() -> list[str]:
    """Aspects that have a rubric file (`prompts/judge_aspect_<name>.md`)."""
    folder = resources.files("realign").joinpath("prompts")
    names = (p.name for p in folder.iterdir())
    return sorted(
        n[len("judge_aspect_") : -3] for n in names if re.fullmatch(r"judge_aspect_\w+\.md", n)
    )


def parse_aspects(text: str) -> list[str]:
    """'alignment,factuality' → ['alignment', 'factuality']; raises ValueError on unknown names."""
    wanted = [a.strip().lower() for a in text.split(",") if a.strip()]
    known = available_aspects()
    bad = [a for a in wanted if a not in known]
    if bad or not wanted:
        raise ValueError(
            f"unknown aspect(s) {', '.join(bad) or '(none given)'}; available: {', '.join(known)}"
        )
    return list(dict.fromkeys(wanted))


class PointwiseOutput(BaseModel):
    """Field order matters: the model writes its reasons before it commits to a score."""

    rationale: str = Field(description="One to three short sentences.")
    score: int = Field(ge=1, le=10)


class PairwiseOutput(BaseModel):
    """Field order matters: the model writes its reasons before it picks a winner."""

    rationale: str = Field(description="One to three short sentences.")
    winner: Literal["A", "B", "tie"]


# --- prompts ------------------------------------------------------------------------------


def _shown(text: str) -> str:
    cut = tokens.truncate(text, RESPONSE_BUDGET)
    return cut if cut == text else cut + "\n[… truncated]"


def rubric(
    aspect: str,
    *,
    pointwise: bool,
    task_type: str | None,
    pack: CriteriaPack | None,
    reference: str | None,
    instruction: str = "",
) -> str:
    # The built-in rubrics do not read `criterion` (alignment is judged against the request);
    # a user's own rubric file may.
    crit = pack.criteria.get(task_type) if pack is not None and task_type else None
    (msg,) = prompts.render(
        f"judge_aspect_{aspect}",
        pointwise=pointwise,
        task_type=task_type or UNKNOWN_TASK,
        criterion=crit.format if crit else "",
        reference=reference or "",
        reference_lines=metrics.reference_lines(instruction, reference) if reference else "any",
        reference_count=len(metrics.gold_answers(reference)) if reference else 0,
    )
    return msg.content


def pointwise_request(
    unit: Unit, aspect: str, *, pack: CriteriaPack | None, reference: str | None
) -> ChatRequest:
    text_style = pointwise_text_request(unit, aspect, pack, reference)
    if text_style is not None:  # the pack's own judge prompt (ReAlign's answer style)
        return text_style
    messages = prompts.render(
        "judge_pointwise",
        aspect=aspect,
        rubric=rubric(
            aspect,
            pointwise=True,
            task_type=unit.task_type,
            pack=pack,
            reference=reference,
            instruction=unit.instruction,
        ),
        context=unit.context,
        instruction=unit.instruction,
        response=_shown(unit.response),
    )
    return ChatRequest(
        stage="judge", messages=messages, max_tokens=OUTPUT_TOKENS, record_id=unit.id
    )


def pairwise_request(
    first: Unit,
    second: Unit,
    aspect: str,
    *,
    task_type: str | None,
    pack: CriteriaPack | None,
    reference: str | None,
) -> ChatRequest:
    text_style = pairwise_text_request(first, second, aspect, pack)
    if text_style is not None:  # the pack's own judge prompt (ReAlign's answer style)
        return text_style
    messages = prompts.render(
        "judge_pairwise",
        aspect=aspect,
        rubric=rubric(
            aspect,
            pointwise=False,
            task_type=task_type,
            pack=pack,
            reference=reference,
            instruction=first.instruction,
        ),
        context=first.context,
        instruction=first.instruction,
        response_a=_shown(first.response),
        response_b=_shown(second.response),
    )
    return ChatRequest(
        stage="judge", messages=messages, max_tokens=OUTPUT_TOKENS, record_id=first.id
    )


# --- swap consistency ---------------------------------------------------------------------


def to_side(winner: Literal["A", "B", "tie"], b_shown_first: bool) -> Side:
    """Map the judge's 'A'/'B' (positions) back to the inputs a/b."""
    if winner == "tie":
        return "tie"
    shown_first: Side = "b" if b_shown_first else "a"
    shown_second: Side = "a" if b_shown_first else "b"
    return shown_first if winner == "A" else shown_second


def combine_orders(a_first: Side, b_first: Side) -> Outcome:
    """B's outcome against A: a win or loss only when both orders agree, else a tie."""
    if a_first == b_first == "b":
        return "win"
    if a_first == b_first == "a":
        return "lose"
    return "tie"


# --- running many calls -------------------------------------------------------------------


async def run_pool(jobs: Iterable[Callable[[], Awaitable[None]]], workers: int) -> None:
    """Run jobs with at most `workers` in flight, without creating them all up front."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:  # one shared iterator: each job is taken by exactly one worker
            await job()

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))


class JudgeFailure(BaseModel):
    id: str
    turn: int
    aspect: str
    order: Literal["a_first", "b_first"] | None = None
    error: str
    raw_output: str | None = None


async def judge_call(
    engine: Engine, request: ChatRequest, schema: type[PointwiseOutput] | type[PairwiseOutput]
) -> tuple[PointwiseOutput | PairwiseOutput | None, str | None, str | None]:
    """(output, error, raw output); errors of the model or backend are data, not crashes."""
    try:
        if isinstance(request, TextJudgeRequest):
            rationale, verdict = await text_verdict(engine, request)
            if schema is PairwiseOutput:
                return PairwiseOutput(rationale=rationale, winner=verdict), None, None  # type: ignore[arg-type]
            return PointwiseOutput(rationale=rationale, score=int(verdict)), None, None
        (out,) = await engine.structured(request, schema)
        return out, None, None
    except StructuredOutputError as e:
        return None, str(e), e.raw_output
    except BackendError as e:
        return None, f"backend error: {e}", None
