import pytest

from realign.metrics import boxed_contents as boxed
from realign.stages.filter import PRESETS, RULES, decide, has_code, last_number


def test_passes_a_good_rewrite() -> None:
    d = decide("Explain X", "X is a thing.", "**X** is a thing.\n\n- It matters.", "open_qa")
    assert not d.keep_original and d.rule == "passed"


def test_too_short_rewrite_keeps_original() -> None:
    original = "word " * 100
    d = decide("q", original, "word " * 40, "open_qa")
    assert d.keep_original and d.rule == "length_ratio"


def test_half_length_is_allowed() -> None:
    original = "word " * 100
    assert not decide("q", original, "word " * 55, "open_qa").keep_original


def test_code_lost_or_added() -> None:
    code = "Here:\n```python\nprint(1)\n```"
    assert (
        decide("q", code, "Here is the answer: print one. " * 3, "explain_code").rule
        == "code_mismatch"
    )
    assert decide("q", "Use a loop to sum items.", code + " extra words", "open_qa").rule == (
        "code_mismatch"
    )
    assert has_code("def add(a, b):\n    return a + b")
    assert has_code("function add(a, b) { return a + b }")
    assert not has_code("Define the function of a heart.")


def test_short_answers_must_survive() -> None:
    assert (
        decide("q", "B", "The answer is option C, clearly.", "closed_qa").rule
        == "short_answer_lost"
    )
    assert not decide(
        "q", "B", "The answer is **B**, because of the second clause.", "closed_qa"
    ).keep_original
    assert decide(
        "q", "True", "That statement is correct in most cases.", "fact_verification"
    ).rule == ("short_answer_lost")
    # "Bob" contains "b" but not as a standalone token
    assert decide("q", "b", "Bob said the answer was a.", "closed_qa").rule == "short_answer_lost"


def test_gsm8k_final_answer() -> None:
    orig = "She sells 9 eggs at $2.\n#### 18"
    assert (
        decide(
            "q",
            orig,
            "Step 1: 16-3-4 = 9 eggs.\nStep 2: 9*2 = 18 dollars.\n#### 18",
            "math_puzzles",
        ).rule
        == "passed"
    )
    # gsm8k/math presets: graders read the `####` line, so it must stay (issue 20: the other
    # presets accept the same number in other words, test_final_line_in_other_words_passes)
    assert decide(
        "q",
        orig,
        "Step 1: 16-3-4 = 9 eggs.\nStep 2: 9*2 = 18 dollars. The answer is 18.",
        "math_puzzles",
        "gsm8k",
    ).rule == ("final_answer_lost")
    assert decide(
        "q", orig, "Step 1: 16-3-4 = 9.\nStep 2: 9*2 = 18 dollars.\n#### 19", "math_puzzles"
    ).rule == ("final_answer_lost")
    assert (
        decide(
            "q", "#### 1,000", "Work it out to 1000 in total here.\n#### 1000", "math_puzzles"
        ).rule
        == "passed"
    )


def test_boxed_and_last_number() -> None:
    assert boxed(r"so \boxed{\frac{1}{2}} done") == [r"\frac{1}{2}"]
    assert last_number("a 3 then 4.50") == "4.50"
    orig = r"The area is \boxed{12}."
    assert (
        decide("q", orig, r"Area = 3*4 = \boxed{12} square units.", "math_puzzles").rule == "passed"
    )
    assert decide("q", orig, r"Area = 3*4 = \boxed{13} square units.", "math_puzzles").rule == (
        "final_answer_lost"
    )
    # math types: the original's last number must be the rewrite's final answer
    assert (
        decide(
            "q", "3 + 4 = 7", "We add three and four.\nThat gives 7 in total.", "math_puzzles"
        ).rule
        == "passed"
    )
    assert decide(
        "q", "3 + 4 = 7", "We add three and four.\nThat gives 8 in total.", "math_puzzles"
    ).rule == ("final_answer_lost")
    # not a math type: the numbers of a long answer are not its final answer, but a changed
    # one is lost from a brief answer and a number the original never stated (issue 20)
    long_orig = "The club was founded in 1990 by a group of teachers from the old town."
    long_rw = "The club was founded in 1991 by a group of teachers from the old town, long ago."
    assert decide("q", long_orig, long_rw, "open_qa").rule == "short_answer_lost"
    assert decide("q", long_orig, long_rw, "open_qa", "no-robots").rule in (
        "short_answer_lost",
        "invented_content",
    )
    kept = "The club was founded in **1990** by a group of teachers from the old town, long ago."
    assert decide("q", long_orig, kept, "open_qa").rule == "passed"


def test_planning_needs_a_request_for_a_plan() -> None:
    resp = "Day 1: arrive.\nDay 2: museum visit and lunch."
    assert (
        decide("What is Rome like?", resp, resp + " More.", "planning").rule
        == "planning_not_requested"
    )
    assert decide("Plan a 2-day trip to Rome", resp, resp + " More.", "planning").rule == "passed"


def test_short_original_answer_must_survive() -> None:
    """Issue 13 item 10: the embedded model replaced gold answers with non-answers."""
    d = decide(
        "Who holds the record for ...?",
        "Ben Fransham",
        "The answer to the question is Ben Smith, a British runner.",
        "open_qa",
    )
    assert d.keep_original and d.rule == "short_answer_lost" and "Fransham" in d.reason
    assert (
        decide(
            "q",
            "Ben Fransham",
            "**Ben Fransham** holds it, since 2013.",
            "open_qa",
            evidence=["Ben Fransham has held the record since 2013."],  # the year's source
        ).rule
        == "passed"
    )
    assert decide("q", "Founded in 1990.", "It was founded in 1991, long ago.", "open_qa").rule == (
        "short_answer_lost"
    )
    # framing words may change; the words that carry the answer may not
    q = "What is the capital of France?"  # where "France" comes from
    assert decide(q, "It is Paris.", "**Paris** is the capital of France.", "open_qa").rule == (
        "passed"
    )
    assert decide("q", "1,000 metres", "About 1000 metres in total.", "open_qa").rule == "passed"
    # nine words and more: not a short answer
    nine = "The river is long and wide and very deep."
    assert decide("q", nine, "A river: long, wide and deep, it flows on.", "open_qa").rule == (
        "passed"
    )


def test_stated_answer_of_a_long_original_must_survive() -> None:
    orig = (
        "Light travels faster than sound, so the flash reaches you first. "
        "Therefore, the answer is (C)."
    )
    kept = "**Answer: (C)**\n\nLight is faster than sound, so the flash is seen before the bang."
    changed = "**Answer: (B)**\n\nLight is faster than sound, so the flash is seen before the bang."
    assert decide("q", orig, kept, "exam_problem_solving_tutor").rule == "passed"
    d = decide("q", orig, changed, "exam_problem_solving_tutor")
    assert d.rule == "short_answer_lost" and "stated answer" in d.reason


@pytest.mark.parametrize(
    "rewrite",
    [
        "**Final answer:** (C) 32",
        "The correct option is C: a force acts on it.",
        "Option A is tempting, but the right answer is (C).",
        "(C) is correct, since A alone would not balance.",
        "I would choose C. A quick check confirms it.",
        "(C) fits best. A quick check confirms it.",
        "C",
    ],
)
def test_a_changed_option_letter_is_rejected_even_when_the_letter_still_appears(
    rewrite: str,
) -> None:
    d = decide("q", "A", rewrite, "exam_problem_solving_tutor", "open-platypus")
    assert d.keep_original and d.rule == "short_answer_lost", d
    # the same rewrite choosing the original's letter passes
    same = (
        rewrite.replace("C", "A", 1)
        if not rewrite.startswith("Option A")
        else (rewrite.replace("(C)", "(A)"))
    )
    d = decide("q", "A", same, "exam_problem_solving_tutor", "open-platypus")
    assert d.rule in ("passed", "unchanged"), d  # "A" alone is the original itself


def test_single_letter_answers_are_case_sensitive() -> None:
    """Original "A" must not pass against a rewrite choosing (C) that uses the article "a"."""
    rw = "This is a classic trap: the correct option is (C), since a force acts on it."
    assert decide("q", "A", rw, "exam_problem_solving_tutor").rule == "short_answer_lost"
    assert decide("q", "A", "Option **A** is correct: it is a scalar.", "closed_qa").rule == (
        "passed"
    )
    assert decide("q", "(A)", "The answer is (A), a scalar.", "closed_qa").rule == "passed"
    assert decide("q", "b", "The answer is (B).", "closed_qa").rule == "short_answer_lost"


@pytest.mark.parametrize(
    "rewrite",
    [
        "The answer to the question is not provided.",
        "I am not sure who holds that record.",
        "I cannot answer that without more information about Ben Fransham.",
        "Revised response: Ben Fransham holds the record.",
        "Ben Fransham.\n\n### Instruction: write more",
        "The format guide asks for a name: Ben Fransham.",
    ],
)
def test_refusals_and_meta_text_are_rejected(rewrite: str) -> None:
    d = decide("Who holds the record?", "Ben Fransham", rewrite, "open_qa")
    assert d.keep_original and d.rule == "meta_text", d


def test_meta_text_allows_what_the_original_already_says() -> None:
    orig = "I'm not sure, but it may be Ben Fransham, who set it in 2013 in London."
    rw = "I'm not sure, but it may be **Ben Fransham**, who set it in 2013 in London."
    assert decide("q", orig, rw, "open_qa").rule == "passed"
    refusal = "I can't help with making explosives. They can hurt people badly."
    rw = "I can't help with that. Explosives can seriously hurt people.\n\n- Read about safety."
    assert decide("q", refusal, rw, "rejecting").rule == "passed"


def test_unchanged_copy_is_not_a_rewrite() -> None:
    orig = "Canberra is the capital of Australia.\nIt was chosen as a compromise."
    d = decide(
        "q",
        orig,
        "  Canberra is the capital of Australia.\n\nIt was chosen as a compromise. ",
        "open_qa",
    )
    assert d.keep_original and d.rule == "unchanged"


def test_gsm8k_last_final_answer_line_counts() -> None:
    orig = "She sells 9 eggs at $2.\n#### 18"
    rw = "#### 18\nStep 1: 9 eggs.\nStep 2: 9*2 = 19 dollars.\n#### 19"
    assert decide("q", orig, rw, "math_puzzles", "gsm8k").rule == "final_answer_lost"


def test_presets_name_their_rules_in_the_decision() -> None:
    for name, rules in PRESETS.items():
        assert rules[:2] == ("unchanged", "meta_text") and set(rules) <= set(RULES)
        d = decide("q", "Paris", "The capital is **Paris**.", "open_qa", name)
        assert d.rule == "passed" and d.preset == name and d.checked == list(rules)
    with pytest.raises(ValueError, match="unknown filter preset"):
        decide("q", "a", "b", "open_qa", "alpaca-ish")


def test_open_platypus_preset() -> None:
    # ReAlign: a one-character answer must stay a standalone token; True/False too
    assert decide(
        "q", "C", "The answer is (B).", "exam_problem_solving_tutor", "open-platypus"
    ).rule == ("short_answer_lost")
    assert (
        decide(
            "q",
            "True",
            "**True.** Water boils at 100 °C at sea level.",
            "fact_verification",
            "open-platypus",
            evidence=["At sea level water boils at 100 °C."],
        ).rule
        == "passed"
    )
    assert decide(
        "q",
        "Use a loop over the items and add each one to a running total.",
        "Use a loop over the items and add each one to a running total:\n```python\n"
        "total = 0\nfor x in items:\n    total += x\n```",
        "open_qa",
        "open-platypus",
    ).rule == ("code_mismatch")
    # no planning rule in this preset
    resp = "Day 1: arrive.\nDay 2: museum visit and lunch."
    assert (
        decide("What is Rome like?", resp, resp + " More.", "planning", "open-platypus").rule
        == "passed"
    )


def test_no_robots_preset() -> None:
    resp = "Day 1: arrive.\nDay 2: museum visit and lunch."
    assert decide("Hi", resp, resp + " More.", "default", "no-robots").rule == "default_type"
    assert decide("What is Rome like?", resp, resp + " More.", "planning", "no-robots").rule == (
        "planning_not_requested"
    )
    # ReAlign's no-robots rules do not check short answers; since issue 20 every preset ends
    # with the safety rules, which do
    assert (
        decide("q", "Paris", "The capital is Lyon, in fact.", "open_qa", "no-robots").rule
        == "short_answer_lost"
    )


def test_math_presets() -> None:
    orig = "2 + 2 = 4\n#### 4"
    assert decide(
        "What is two plus two?", orig, "Add: 2 + 2 = 4.\n#### 4", "math_puzzles", "math"
    ).rule == ("math_without_numbers")
    assert (
        decide("What is 2 + 2?", orig, "Add: 2 + 2 = 4.\n#### 4", "math_puzzles", "math").rule
        == "passed"
    )
    assert decide(
        "What is 2 + 2?", orig, "Add: 2 + 2 = 5.\n#### 5", "math_puzzles", "gsm8k"
    ).rule == ("final_answer_lost")


def test_numeric_rules_follow_the_criterion_not_the_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from packs import TYPES, write_pack

    from realign.criteria import load_pack

    orig = "3 apples plus 4 apples makes 7 apples."
    lost = "Adding them up: 3 apples and 4 apples give 8 apples in all, so eight."
    # Built-in (no pack given) math type: the original's last number must survive.
    assert decide("q", orig, lost, "math_puzzles").rule == "final_answer_lost"
    assert decide("q", orig, lost, "open_qa").rule != "final_answer_lost"
    # A pack whose math type does not say `answer: numeric`, and whose open_qa does.
    pack = load_pack(str(write_pack(tmp_path / "p", TYPES)))
    plain = pack["math_puzzles"].model_copy(update={"answer": "text"})
    tagged = pack["open_qa"].model_copy(update={"answer": "numeric"})
    own = pack.model_copy(update={"criteria": {"math_puzzles": plain, "open_qa": tagged}})
    assert decide("q", orig, lost, "math_puzzles", pack=own).rule != "final_answer_lost"
    assert decide("q", orig, lost, "open_qa", pack=own).rule == "final_answer_lost"
