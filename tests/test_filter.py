from realign.filter import decide, has_code, last_number
from realign.metrics import boxed_contents as boxed


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
    assert decide(
        "q",
        orig,
        "Step 1: 16-3-4 = 9 eggs.\nStep 2: 9*2 = 18 dollars. The answer is 18.",
        "math_puzzles",
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
    # not a math type: numbers are not checked
    assert (
        decide("q", "Founded in 1990.", "It was founded in 1991, long ago.", "open_qa").rule
        == "passed"
    )


def test_planning_needs_a_request_for_a_plan() -> None:
    resp = "Day 1: arrive.\nDay 2: museum visit and lunch."
    assert (
        decide("What is Rome like?", resp, resp + " More.", "planning").rule
        == "planning_not_requested"
    )
    assert decide("Plan a 2-day trip to Rome", resp, resp + " More.", "planning").rule == "passed"
