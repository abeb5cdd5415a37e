"""The judge: swap consistency, matching, rubrics, and whole runs on the FakeBackend."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from realign import judge
from realign.criteria import CriteriaPack, load_pack
from realign.llm.base import BackendError, ChatRequest
from realign.llm.engine import Engine
from realign.llm.fake import FakeBackend
from realign.records import FilterDecision, RealignMeta, Record, Turn, UnitMeta


def rec(
    rid: str, question: str, answer: str, category: str | None = None, index: int = 0
) -> Record:
    extra = {"category": category} if category else {}
    return Record(
        id=rid,
        index=index,
        source_format="items",
        turns=[
            Turn(role="user", content=question, extra=extra),
            Turn(role="assistant", content=answer),
        ],
    )


@pytest.fixture
def pack(tmp_path: Path) -> CriteriaPack:
    (tmp_path / "open_qa.md").write_text(
        "---\nname: open_qa\ngroup: qa\ndescription: Open questions about facts.\nrewrite: yes\n"
        "examples:\n" + "".join(f"  - q{i}\n" for i in range(8)) + "---\n"
        "Start with the direct answer in bold, then one short paragraph of context.\n",
        encoding="utf-8",
    )
    return load_pack(str(tmp_path))


# --- swap consistency ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("winner", "b_first", "side"),
    [
        ("A", False, "a"),
        ("B", False, "b"),
        ("A", True, "b"),
        ("B", True, "a"),
        ("tie", True, "tie"),
    ],
)
def test_to_side_maps_positions_back_to_inputs(winner: str, b_first: bool, side: str) -> None:
    assert judge.to_side(winner, b_first) == side  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a_first", "b_first", "outcome"),
    [
        ("b", "b", "win"),
        ("a", "a", "lose"),
        ("tie", "tie", "tie"),
        ("a", "b", "tie"),  # flips with the order: position bias, not a preference
        ("b", "a", "tie"),
        ("b", "tie", "tie"),
        ("tie", "a", "tie"),
    ],
)
def test_combine_orders(a_first: str, b_first: str, outcome: str) -> None:
    assert judge.combine_orders(a_first, b_first) == outcome  # type: ignore[arg-type]


# --- matching -----------------------------------------------------------------------------


def test_match_by_id_then_instruction_and_list_the_rest() -> None:
    a = [
        rec("1", "What is X?", "x"),
        rec("2", "Who is Y?", "y"),
        rec("a3", "Where is Z?", "z"),
        rec("a4", "Lonely?", "l"),
    ]
    b = [
        rec("2", "Who is Y?", "Y!"),
        rec("1", "What is X?", "X!"),
        rec("b9", "  where IS   z? ", "Z!"),
        rec("b5", "Other?", "o"),
    ]
    pairs, info = judge.match_records(a, b)
    assert [(p.a.id, p.b.id, p.matched_by) for p in pairs] == [
        ("1", "1", "id"),
        ("2", "2", "id"),
        ("a3", "b9", "instruction"),  # whitespace and case do not matter
    ]
    assert (info.pairs, info.by_id, info.by_instruction) == (3, 2, 1)
    assert [(u.side, u.id) for u in info.unmatched] == [("a", "a4"), ("b", "b5")]
    assert "no record in B" in info.unmatched[0].reason
    assert info.instruction_mismatch_ids == []


def test_match_flags_ids_whose_instructions_differ_and_handles_duplicates() -> None:
    a = [rec("1", "Q one", "a"), rec("x", "Same?", "a1"), rec("y", "Same?", "a2")]
    b = [rec("1", "Q two", "b"), rec("p", "Same?", "b1"), rec("q", "Same?", "b2")]
    pairs, info = judge.match_records(a, b)
    assert info.instruction_mismatch_ids == ["1"]
    assert [(p.a.id, p.b.id) for p in pairs] == [("1", "1"), ("x", "p"), ("y", "q")]
    assert info.unmatched == []


def test_reference_index_by_id_then_instruction() -> None:
    refs = judge.ReferenceIndex([rec("7", "Capital of France?", "Paris"), rec("8", "Two?", "2")])
    assert refs.lookup(["7"], "whatever", 0) == "Paris"
    assert refs.lookup(["nope", "8"], "", 0) == "2"
    assert refs.lookup(["nope"], "capital of  france?", 0) == "Paris"
    assert refs.lookup(["nope"], "unknown", 0) is None


# --- units and prompts --------------------------------------------------------------------


def test_task_type_prefers_realign_meta_then_input_category() -> None:
    r = rec("1", "Q", "A", category="open_qa")
    assert judge.task_type_of(r, 1) == "open_qa"
    r.meta = RealignMeta(units=[UnitMeta(turn=1, task_type="explain_answer")])
    assert judge.task_type_of(r, 1) == "explain_answer"
    assert judge.task_type_of(rec("2", "Q", "A"), 1) is None


def test_units_cover_every_assistant_turn_with_context() -> None:
    r = Record(
        id="m",
        index=0,
        source_format="messages",
        turns=[
            Turn(role="user", content="Hi, my name is Ann."),
            Turn(role="assistant", content="Hello Ann."),
            Turn(role="user", content="What is my name?"),
            Turn(role="assistant", content="Ann."),
        ],
    )
    units = judge.units_of(r)
    assert [(u.turn, u.position, u.instruction) for u in units] == [
        (1, 0, "Hi, my name is Ann."),
        (3, 1, "What is my name?"),
    ]
    assert "Hello Ann." in units[1].context and units[0].context == ""


def test_parse_aspects() -> None:
    assert judge.parse_aspects(" readability, factuality,readability") == [
        "readability",
        "factuality",
    ]
    assert set(judge.available_aspects()) >= {"alignment", "factuality", "readability"}
    with pytest.raises(ValueError, match=r"unknown aspect.*beauty.*available: alignment"):
        judge.parse_aspects("readability,beauty")


def test_alignment_rubric_judges_against_the_request_not_realigns_criterion(
    pack: CriteriaPack,
) -> None:
    # Scoring against realign's own format criterion would make rewrites win by construction.
    text = judge.rubric("alignment", pointwise=True, task_type="open_qa", pack=pack, reference=None)
    assert "direct answer in bold" not in text and "open_qa" not in text
    assert "against the request alone" in " ".join(text.split()) and "Scale:" in text
    other = judge.rubric("alignment", pointwise=False, task_type="poem", pack=pack, reference=None)
    assert "against the request alone" in " ".join(other.split()) and "Scale:" not in other


def test_readability_rubric_does_not_penalise_organised_length() -> None:
    text = judge.rubric("readability", pointwise=True, task_type=None, pack=None, reference=None)
    flat = " ".join(text.split())
    assert "Length is not a fault in itself" in flat and "long response that is well" in flat
    assert "too long" not in flat and "length fits" not in flat


def test_factuality_rubric_uses_the_reference_or_says_there_is_none() -> None:
    with_ref = judge.rubric(
        "factuality", pointwise=True, task_type=None, pack=None, reference="Paris\nParis, France"
    )
    assert "<reference>\nParis\nParis, France\n</reference>" in with_ref
    flat = " ".join(with_ref.split())
    assert "giving any one of them is enough" in flat and "every one" not in flat
    without = judge.rubric("factuality", pointwise=True, task_type=None, pack=None, reference=None)
    assert "no reference answer" in without.lower() and "<reference>" not in without


def test_factuality_rubric_asks_for_every_line_of_a_list_answer() -> None:
    wilburys = "Roy Orbison\nJeff Lynne\nGeorge Harrison\nBob Dylan\nTom Petty"
    text = judge.rubric(
        "factuality",
        pointwise=True,
        task_type=None,
        pack=None,
        reference=wilburys,
        instruction="who are the artists in the traveling wilburys?",
    )
    flat = " ".join(text.split())
    assert "lists all 5 of them" in flat and "gives every one" in flat
    assert "any one of them is enough" not in flat


def test_pointwise_factuality_tells_the_judge_and_the_metric_about_a_list() -> None:
    question = "when did world war one begin and end?"
    refs = judge.ReferenceIndex([rec("0", question, "28 July 1914\n11 November 1918")])
    half = rec("0", question, "It began on 28 July 1914.")
    whole = rec("0", question, "From 28 July 1914 to 11 November 1918.", index=1)
    engine = Engine(FakeBackend(lambda r: json.dumps({"rationale": "ok", "score": 5})))
    out = asyncio.run(
        judge.judge_pointwise(engine, [half, whole], ["factuality"], pack=None, references=refs)
    )
    m0, m1 = out.units[0].metrics, out.units[1].metrics
    assert (m0.answer_lines, m0.answers_found, m0.contains_answer) == ("all", 1, False)
    assert (m1.answers_found, m1.contains_answer) == (2, True)
    assert out.metrics.containment_rate == 0.5
    calls = engine.backend.calls  # type: ignore[attr-defined]
    assert all("lists all 2 of them" in " ".join(c.messages[-1].content.split()) for c in calls)


# --- pairwise runs on the FakeBackend -----------------------------------------------------


def _shown(req: ChatRequest) -> tuple[str, str]:
    user = next(m.content for m in req.messages if "<response_a>" in m.content)  # not a re-ask
    a = re.search(r"<response_a>\n(.*?)\n</response_a>", user, re.S)
    b = re.search(r"<response_b>\n(.*?)\n</response_b>", user, re.S)
    assert a and b
    return a.group(1), b.group(1)


def _verdict(winner: str, why: str = "because") -> str:
    return json.dumps({"rationale": why, "winner": winner})


def run_pairwise(
    responder, a, b, aspects=("readability",), **kw
) -> tuple[judge.Comparison, FakeBackend]:  # type: ignore[no-untyped-def]
    backend = FakeBackend(responder)
    engine = Engine(backend, concurrency=4)
    out = asyncio.run(
        judge.judge_pairwise(engine, a, b, list(aspects), pack=None, resamples=200, **kw)
    )
    return out, backend


A = [rec(str(i), f"Question {i}?", f"short {i}", index=i) for i in range(6)]
B = [
    rec(str(i), f"Question {i}?", f"- a **longer** answer {i}", "open_qa", index=i)
    for i in range(6)
]


def test_each_pair_is_judged_in_both_orders() -> None:
    _cmp, backend = run_pairwise(
        lambda r: _verdict("B"), A, B, aspects=("readability", "factuality")
    )
    assert len(backend.calls) == 6 * 2 * 2
    shown = {_shown(c) for c in backend.calls}
    assert ("short 0", "- a **longer** answer 0") in shown
    assert ("- a **longer** answer 0", "short 0") in shown


def test_position_bias_counts_as_ties() -> None:
    cmp, _ = run_pairwise(lambda r: _verdict("A"), A, B)  # always prefers whatever is first
    st = cmp.summary["readability"].overall
    assert st.counts == {"win": 0, "tie": 6, "lose": 0}
    assert st.consistency == 0.0
    v = cmp.pairs[0].verdicts["readability"]
    assert v.outcome == "tie" and not v.consistent
    assert v.a_first is not None and v.a_first.winner == "a"
    assert v.b_first is not None and v.b_first.winner == "b"


def test_consistent_preference_counts_as_wins_with_an_interval() -> None:
    def prefers_lists(req: ChatRequest) -> str:
        first, _second = _shown(req)
        return _verdict("A" if first.startswith("- ") else "B", "the list reads better")

    cmp, _ = run_pairwise(prefers_lists, A, B)
    st = cmp.summary["readability"].overall
    assert st.counts == {"win": 6, "tie": 0, "lose": 0}
    assert st.win.rate == 1.0 and st.win.low == 1.0 and st.consistency == 1.0
    assert cmp.summary["readability"].by_task_type["open_qa"].n == 6
    assert cmp.pairs[0].verdicts["readability"].b_first.rationale == "the list reads better"  # type: ignore[union-attr]
    assert "B (the second input)" in cmp.convention


def test_mixed_outcomes_have_honest_intervals() -> None:
    def mixed(req: ChatRequest) -> str:
        first, _second = _shown(req)
        i = int(first[-1])
        if i < 3:  # B better for 0-2, A better for 3-4, a tie for 5
            return _verdict("A" if first.startswith("- ") else "B")
        if i < 5:
            return _verdict("B" if first.startswith("- ") else "A")
        return _verdict("tie")

    cmp, _ = run_pairwise(mixed, A, B)
    st = cmp.summary["readability"].overall
    assert st.counts == {"win": 3, "tie": 1, "lose": 2}
    assert st.win.rate == pytest.approx(0.5)
    assert st.win.low < 0.5 < st.win.high < 1.0  # six pairs: a wide interval
    assert st.lose.rate == pytest.approx(1 / 3)


def test_position_bias_over_enough_pairs_is_flagged_as_an_unfit_judge() -> None:
    cmp, _ = run_pairwise(lambda r: _verdict("A", f"{_shown(r)[0]} reads better"), A, B)
    assert cmp.judge_warnings == [
        "readability: all 6 pairs are ties: the judge always preferred the same position, so "
        "every verdict flipped when the order was swapped (order consistency 0%)"
    ]
    msg = judge.unfit_message(cmp.model, cmp.judge_warnings)
    assert msg.startswith("The judge model fake-model looks unfit for judging")


def test_empty_echoed_and_repeated_rationales_are_flagged() -> None:
    def junk(req: ChatRequest) -> str:
        first, _ = _shown(req)
        i = int(first[-1])
        if i < 3:
            return _verdict("B" if first.startswith("short") else "A", "][")
        return _verdict("tie", "}\nQuestion 1?\n<response_a>\nshort 1")

    cmp, _ = run_pairwise(junk, A, B)
    (bad,) = cmp.judge_warnings
    assert (
        bad
        == "readability: 12 of 12 rationales are empty or not an assessment (no words, e.g. '][')"
    )
    assert judge.rationale_problem("][") == "no words"
    assert judge.rationale_problem("}\n<response_a>\nshort") == "copies the prompt"
    assert judge.rationale_problem("B names the capital; A does not.") is None

    same, _ = run_pairwise(lambda r: _verdict("tie", "Both are fine."), A[:3], B[:3])
    assert same.judge_warnings == [
        "readability: 6 of 6 rationales are the same text ('both are fine.')"
    ]


def test_a_judge_that_discriminates_gets_no_warning() -> None:
    def fair(req: ChatRequest) -> str:
        first, second = _shown(req)
        better = "A" if first.startswith("- ") else "B"
        return _verdict(better, f"The list in {first[-1]} is easier to scan than {second[:8]}.")

    cmp, _ = run_pairwise(fair, A, B)
    assert cmp.summary["readability"].overall.counts["win"] == 6
    assert cmp.judge_warnings == []


def _graded(req: ChatRequest) -> str:
    m = re.search(r"<response>\n(.*?)\n</response>", req.messages[-1].content, re.S)
    assert m
    return m.group(1)


def test_pointwise_constant_scores_are_flagged() -> None:
    backend = FakeBackend(lambda r: json.dumps({"rationale": f"Clear: {_graded(r)}.", "score": 5}))
    out = asyncio.run(judge.judge_pointwise(Engine(backend), A, ["readability"], pack=None))
    assert out.judge_warnings == ["readability: all 6 responses got the same score (5)"]
    varied = FakeBackend(
        lambda r: json.dumps(
            {"rationale": f"Clear: {_graded(r)}.", "score": int(_graded(r)[-1]) + 1}
        )
    )
    ok = asyncio.run(judge.judge_pointwise(Engine(varied), A, ["readability"], pack=None))
    assert ok.judge_warnings == []


def test_failed_calls_are_listed_and_not_counted() -> None:
    def flaky(req: ChatRequest) -> str:
        first, _ = _shown(req)
        if first.endswith("0"):
            return "not json at all"
        return _verdict("tie")

    cmp, _ = run_pairwise(flaky, A, B)
    v = cmp.pairs[0].verdicts["readability"]
    assert v.outcome is None
    assert cmp.summary["readability"].overall.n == 5
    assert {(f.id, f.order) for f in cmp.failures} == {("0", "a_first"), ("0", "b_first")}
    assert "did not match PairwiseOutput" in cmp.failures[0].error
    assert cmp.failures[0].raw_output == "not json at all"


def test_backend_errors_become_failures() -> None:
    cmp, _ = run_pairwise(lambda r: BackendError("server says no", status=400), A[:1], B[:1])  # type: ignore[arg-type,return-value]
    assert len(cmp.failures) == 2 and "server says no" in cmp.failures[0].error


def test_reference_and_metrics_appear_beside_verdicts() -> None:
    refs = judge.ReferenceIndex([rec(str(i), f"Question {i}?", f"answer {i}") for i in range(6)])
    cmp, backend = run_pairwise(
        lambda r: _verdict("tie"), A, B, aspects=("factuality",), references=refs
    )
    assert all("<reference>\nanswer" in c.messages[-1].content for c in backend.calls)
    assert cmp.metrics_a.containment_rate == 0.0  # "short 0" lacks "answer 0"
    assert cmp.metrics_b.containment_rate == 1.0
    assert cmp.pairs[0].metrics_b.format.list_items == 1


def test_unmatched_records_are_reported_not_judged() -> None:
    b = [*B[:4], rec("zz", "Something else?", "x")]
    cmp, backend = run_pairwise(lambda r: _verdict("tie"), A, b)
    assert len(cmp.pairs) == 4 and len(backend.calls) == 8
    assert sorted((u.side, u.id) for u in cmp.matching.unmatched) == [
        ("a", "4"),
        ("a", "5"),
        ("b", "zz"),
    ]


def test_run_output_status_and_filter_travel_with_the_pair() -> None:
    b = rec("0", "Question 0?", "new", "open_qa")
    b.meta = RealignMeta(
        units=[
            UnitMeta(
                turn=1,
                task_type="open_qa",
                status="kept",
                reason="filter kept the original",
                filter=FilterDecision(keep_original=True, rule="length_ratio", reason="too short"),
            )
        ]
    )
    cmp, _ = run_pairwise(lambda r: _verdict("tie"), A[:1], [b])
    p = cmp.pairs[0]
    assert p.status_b == "kept" and p.filter_b is not None and p.filter_b.rule == "length_ratio"


def test_comparison_round_trips_through_json() -> None:
    cmp, _ = run_pairwise(lambda r: _verdict("B"), A, B)
    again = judge.Comparison.model_validate_json(cmp.model_dump_json())
    assert again.summary == cmp.summary and again.pairs == cmp.pairs


# --- pointwise ----------------------------------------------------------------------------


def test_pointwise_scores_with_rationale_first(pack: CriteriaPack) -> None:
    def scorer(req: ChatRequest) -> str:
        assert req.json_schema is not None
        assert list(req.json_schema["properties"]) == ["rationale", "score"]
        user = req.messages[-1].content
        score = 9 if "<response>\n- a **longer**" in user else 3
        return json.dumps({"rationale": f"aspect {user.split()[1]}", "score": score})

    engine = Engine(FakeBackend(scorer))
    records = [*B[:2], *(r.model_copy(update={"index": 2 + k}) for k, r in enumerate(A[:2]))]
    refs = judge.ReferenceIndex([rec("0", "Question 0?", "longer answer 0")])
    out = asyncio.run(
        judge.judge_pointwise(
            engine, records, ["alignment", "readability"], pack=pack, references=refs, resamples=200
        )
    )
    assert [u.scores["readability"].score for u in out.units] == [9, 9, 3, 3]
    assert out.units[0].scores["alignment"].rationale == "aspect alignment"
    st = out.summary["readability"].overall
    assert st.mean == pytest.approx(6.0) and st.histogram[8] == 2 and st.histogram[2] == 2
    assert st.low < 6.0 < st.high
    assert set(out.summary["readability"].by_task_type) == {"open_qa", "unknown"}
    assert out.summary["readability"].by_task_type["open_qa"].mean == 9
    assert out.units[0].reference == "longer answer 0" and out.units[1].reference is None
    # Alignment is judged against the request, never against realign's own criterion.
    calls = engine.backend.calls  # type: ignore[attr-defined]
    assert not any("direct answer in bold" in c.messages[-1].content for c in calls)


def test_pointwise_out_of_range_scores_are_reasked_then_listed() -> None:
    backend = FakeBackend(lambda r: json.dumps({"rationale": "x", "score": 11}))
    engine = Engine(backend, reask=1)
    out = asyncio.run(judge.judge_pointwise(engine, A[:2], ["readability"], pack=None))
    assert len(out.failures) == 2 and out.units[0].scores == {}
    assert len(backend.calls) == 4  # each asked once, then re-asked once with the error
    assert "score" in backend.calls[-1].messages[-1].content
    assert out.summary["readability"].overall.n == 0
