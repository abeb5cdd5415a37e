"""Judge calls against the real llama.cpp server (SmolLM2-135M), replayed from cassettes.

The cassettes in `cassettes/test_judge_llama/` were recorded against the embedded server
(SmolLM2-135M) on port 8773: re-record them all with
`python scripts/record_cassettes.py --port 8773 tests/test_judge_llama.py`.

A 135M model is no judge: these tests check the wiring (prompts, grammar-constrained JSON,
both orders, parsing), not the quality of its verdicts.
"""

from __future__ import annotations

import asyncio

import pytest

from realign import judge
from realign.llm.engine import Engine
from realign.llm.openai_backend import OpenAIBackend
from realign.records import Record, Turn

LLAMA_URL = "http://127.0.0.1:8773/v1"
LLAMA_MODEL = "smollm2-135m-instruct"


def rec(rid: str, q: str, a: str) -> Record:
    return Record(
        id=rid,
        index=0,
        source_format="items",
        turns=[
            Turn(role="user", content=q, extra={"category": "open_qa"}),
            Turn(role="assistant", content=a),
        ],
    )


def engine() -> Engine:
    return Engine(
        OpenAIBackend(LLAMA_MODEL, base_url=LLAMA_URL, api_key=None, trust_env=False), concurrency=1
    )


QUESTION = "when did the democratic party change its name?"
PLAIN = "The Democratic Party officially changed its name from the Democratic-Republican Party to the Democratic Party in the 1830s."
REALIGNED = "The Democratic Party changed its name in the 1830s."


@pytest.mark.vcr
def test_llama_pointwise_factuality_with_reference() -> None:
    refs = judge.ReferenceIndex([rec("0", QUESTION, "the 1830s")])
    eng = engine()

    async def go() -> judge.ScoresReport:
        try:
            return await judge.judge_pointwise(
                eng, [rec("0", QUESTION, REALIGNED)], ["factuality"], pack=None, references=refs
            )
        finally:
            await eng.aclose()

    out = asyncio.run(go())
    assert out.failures == []
    score = out.units[0].scores["factuality"]
    assert 1 <= score.score <= 10 and isinstance(score.rationale, str)
    assert out.units[0].metrics.contains_answer is True
    assert out.backend.startswith("openai:http://127.0.0.1:8773/v1:smollm2")


WILBURYS = "who are the artists in the traveling wilburys?"
MEMBERS = "Roy Orbison\nJeff Lynne\nGeorge Harrison\nBob Dylan\nTom Petty"


@pytest.mark.vcr
def test_llama_pointwise_factuality_with_a_list_reference() -> None:
    # The rubric sent (pinned by the recorded request body) says every line is needed, and
    # containment counts a response naming two of five members as not containing the answer.
    refs = judge.ReferenceIndex([rec("7", WILBURYS, MEMBERS)])
    eng = engine()
    partial = "The Traveling Wilburys were Bob Dylan and Tom Petty."

    async def go() -> judge.ScoresReport:
        try:
            return await judge.judge_pointwise(
                eng, [rec("7", WILBURYS, partial)], ["factuality"], pack=None, references=refs
            )
        finally:
            await eng.aclose()

    out = asyncio.run(go())
    assert out.failures == []
    assert 1 <= out.units[0].scores["factuality"].score <= 10
    m = out.units[0].metrics
    assert (m.answer_lines, m.answers_found, m.contains_answer) == ("all", 2, False)


@pytest.mark.vcr
def test_llama_pairwise_both_orders() -> None:
    eng = engine()

    async def go() -> judge.Comparison:
        try:
            return await judge.judge_pairwise(
                eng,
                [rec("0", QUESTION, PLAIN)],
                [rec("0", QUESTION, REALIGNED)],
                ["readability"],
                pack=None,
            )
        finally:
            await eng.aclose()

    out = asyncio.run(go())
    assert out.failures == []
    v = out.pairs[0].verdicts["readability"]
    assert v.a_first is not None and v.b_first is not None
    assert (v.a_first.shown_first, v.b_first.shown_first) == ("a", "b")
    assert v.outcome == judge.combine_orders(v.a_first.winner, v.b_first.winner)
    assert out.summary["readability"].overall.n == 1
    assert eng.stats.completed == 2  # one request per order
    # Issue 13: SmolLM2 answered with the rationales "][" and a copy of the prompt; the
    # comparison says so instead of reporting its verdict like any other.
    assert any("rationales are empty or not an assessment" in w for w in out.judge_warnings)
