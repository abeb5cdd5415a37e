"""The judge in ReAlign's own answer style, for a pack with `answer_style: realign-text` and its
judge templates (`realign criteria import-realign` writes them).

Two of the judge's calls have such templates: the pairwise `readability` comparison
(`judge_readability_*`, `{question}`, `{answer_a}`, `{answer_b}`; the verdict is `[[A]]`,
`[[B]]` or `[[C]]` for a tie) and the pointwise `factuality` score against a reference
(`judge_factuality_*`, `{question}`, `{ref_answer}`, `{answer}`; the score is `[[N]]`). The
other aspects, and these two without a reference or in the other mode, keep realign's rubrics.
"""

from __future__ import annotations

import re

from realign.criteria import CriteriaPack
from realign.judge.units import Unit
from realign.llm.base import ChatRequest, Message, for_record
from realign.llm.engine import Engine
from realign.llm.structured import StructuredOutputError

ATTEMPTS = 3  # a reply without a verdict is asked again, then recorded as a failure
OUTPUT_TOKENS = 1024  # ReAlign's judge writes its explanation before the verdict
_VERDICT = re.compile(r"\[\[([ABC])\]\]")
_RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")


class TextJudgeRequest(ChatRequest):
    """A judge request in the pack's plain-text style; `kind` says how its reply is read."""

    kind: str = "pairwise"  # pairwise | pointwise


def _templates(pack: CriteriaPack | None, name: str) -> tuple[str, str] | None:
    if pack is None or pack.settings.answer_style != "realign-text":
        return None
    system, user = pack.templates.get(f"{name}_system"), pack.templates.get(f"{name}_user")
    return (system, user) if system is not None and user is not None else None


def _request(kind: str, pair: tuple[str, str], record_id: str, **values: str) -> ChatRequest:
    system, user = pair
    return TextJudgeRequest(
        stage="judge",
        kind=kind,
        messages=[
            Message(role="system", content=system.strip()),
            Message(role="user", content=user.format_map(values).strip()),
        ],
        max_tokens=OUTPUT_TOKENS,
        record_id=record_id,
    )


def pairwise_text_request(
    first: Unit, second: Unit, aspect: str, pack: CriteriaPack | None
) -> ChatRequest | None:
    pair = _templates(pack, "judge_readability") if aspect == "readability" else None
    if pair is None:
        return None
    return _request(
        "pairwise",
        pair,
        first.id,
        question=first.instruction,
        answer_a=first.response,
        answer_b=second.response,
    )


def pointwise_text_request(
    unit: Unit, aspect: str, pack: CriteriaPack | None, reference: str | None
) -> ChatRequest | None:
    pair = _templates(pack, "judge_factuality") if aspect == "factuality" else None
    if pair is None or not reference:
        return None
    return _request(
        "pointwise",
        pair,
        unit.id,
        question=unit.instruction,
        ref_answer=reference,
        answer=unit.response,
    )


def read_verdict(text: str, kind: str) -> tuple[str, str | int] | None:
    """(rationale, verdict) of a reply: "A" / "B" / "tie" for pairwise, a 1–10 score for
    pointwise; the last verdict in the text counts. None when there is none."""
    if kind == "pairwise":
        found = _VERDICT.findall(text)
        if not found:
            return None
        last = found[-1]
        return text[: text.rfind(f"[[{last}]]")].strip(), ("tie" if last == "C" else last)
    found = _RATING.findall(text)
    if not found:
        return None
    score = min(10, max(1, round(float(found[-1]))))
    return text[: text.rfind(f"[[{found[-1]}]]")].strip(), score


async def text_verdict(engine: Engine, request: TextJudgeRequest) -> tuple[str, str | int]:
    """(rationale, verdict); StructuredOutputError after ATTEMPTS replies without one."""
    raw = ""
    for _ in range(ATTEMPTS):
        resp = await engine.chat(request, store=False)
        raw = resp.texts[0] if resp.texts else ""
        got = read_verdict(raw, request.kind)
        if got is not None:
            engine.store(request, resp)
            return got
        if resp.cached:
            engine.forget(request)
    raise StructuredOutputError(
        f"judge{for_record(request)}: no verdict in the reply after {ATTEMPTS} attempts", raw
    )
