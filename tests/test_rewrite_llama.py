"""The rewrite and the filter against the real embedded model (SmolLM2-135M on llama.cpp),
replayed from cassettes recorded on http://127.0.0.1:8771/v1 (re-record with
`.venv/bin/python scripts/record_cassettes.py --port 8771 tests/test_rewrite_llama.py`).

What SmolLM2 writes varies; what these tests pin is what realign guarantees whatever it writes:
the rewrite request has the criterion-sized budget, nothing ends as a failure, and a rewrite
that reaches the output keeps the original's answer (the filter preset rejects the rest).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from realign.criteria import load_pack
from realign.llm.base import ChatRequest, ChatResponse
from realign.llm.engine import Engine
from realign.llm.openai_backend import OpenAIBackend
from realign.metrics import GSM8K
from realign.pipeline.record import RunOptions, Stages, process_record
from realign.records import Record, Turn
from realign.stages.rewrite import MIN_OUTPUT_TOKENS

URL = "http://127.0.0.1:8771/v1"  # the fixed port these cassettes are recorded on


class Spy:
    """The llama backend, keeping every rewrite request it sends."""

    def __init__(self) -> None:
        self.inner = OpenAIBackend(
            "smollm2-135m-instruct",
            base_url=URL,
            structured_method="function_calling",
            supports_n=False,
        )
        self.name, self.model = "openai", self.inner.model
        self.sent: list[ChatRequest] = []

    @property
    def backend_id(self) -> str:
        return self.inner.backend_id

    @property
    def supports_n(self) -> bool:
        return False

    async def chat(self, request: ChatRequest) -> ChatResponse:
        self.sent.append(request)
        return await self.inner.chat(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def rec(instruction: str, response: str, category: str) -> Record:
    return Record(
        id="0",
        index=0,
        source_format="items",
        turns=[
            Turn(role="user", content=instruction, extra={"category": category}),
            Turn(role="assistant", content=response),
        ],
    )


def realign(record: Record, **options: object) -> tuple[Record, Spy]:
    backend = Spy()

    async def go() -> Record:
        engine = Engine(backend, concurrency=1)
        stages = Stages(
            pack=load_pack(), engine=engine, options=RunOptions(**options), model=backend.model
        )
        try:
            return await process_record(stages, record)
        finally:
            await engine.aclose()

    return asyncio.run(go()), backend


def check_outcome(out: Record, original: str, preset: str) -> None:
    u = out.meta.units[0]
    assert u.status in ("rewritten", "kept"), u.reason
    if u.status == "rewritten":
        assert u.filter is not None and u.filter.rule == "passed" and u.filter.preset == preset
        assert out.turns[1].content == u.candidates[u.chosen or 0].response
    else:
        assert out.turns[1].content == original


@pytest.mark.vcr
def test_llama_one_letter_exam_answer_gets_a_full_budget_and_keeps_its_letter() -> None:
    original = "B"
    out, backend = realign(
        rec(
            "Which gas do plants take in for photosynthesis?\n"
            "A. Oxygen\nB. Carbon dioxide\nC. Nitrogen\nD. Helium",
            original,
            "exam_problem_solving_tutor",
        ),
        filter_preset="open-platypus",
    )
    rewrites = [r for r in backend.sent if r.stage == "rewrite"]
    assert rewrites and rewrites[0].max_tokens is not None
    assert rewrites[0].max_tokens >= MIN_OUTPUT_TOKENS  # was 2 * 1 + 400 = 402
    check_outcome(out, original, "open-platypus")
    if out.meta.units[0].status == "rewritten":
        assert re.search(r"(?<![A-Za-z])B(?![A-Za-z])", out.turns[1].content)


@pytest.mark.vcr
def test_llama_gsm8k_with_force_never_writes_a_changed_final_answer() -> None:
    original = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
    )
    out, _ = realign(
        rec(
            "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May?",
            original,
            "math_puzzles",
        ),
        force=True,
        filter_preset="gsm8k",
    )
    check_outcome(out, original, "gsm8k")
    if out.meta.units[0].status == "rewritten":
        assert GSM8K.findall(out.turns[1].content)[-1].strip() == "72"


@pytest.mark.vcr
def test_llama_true_false_verdict_is_not_lost() -> None:
    original = "False."
    out, _ = realign(
        rec(
            "True or false: lightning never strikes the same place twice.",
            original,
            "fact_verification",
        )
    )
    check_outcome(out, original, "default")
    if out.meta.units[0].status == "rewritten":
        assert re.search(r"\bfalse\b", out.turns[1].content, re.IGNORECASE)
