"""Reference metrics without an LLM, and the bootstrap intervals."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from realign import metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple,  a pear ", "apple pear"),
        ("Theatre of the Absurd", "theatre of absurd"),  # 'the' only as a whole word
        ("“Quoted” — text…", "quoted text"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert metrics.normalize_answer(text) == expected


def test_gold_answers_split_on_lines() -> None:
    assert metrics.gold_answers("Beijing\n\n Tokyo \n") == ["Beijing", "Tokyo"]


def test_contains_any_gold_answer_after_normalisation() -> None:
    golds = metrics.gold_answers("a Norwegian town circa 1879\na Norwegian town")
    assert metrics.contains_answer("It started in A Norwegian town, in 1879.", golds)
    assert not metrics.contains_answer("It started in Sweden.", golds)


def test_containment_needs_whole_tokens() -> None:
    assert not metrics.contains_answer("In 20130 years", ["2013"])
    assert metrics.contains_answer("In 2013, years later", ["2013"])
    assert not metrics.contains_answer("anything", ["the", ""])  # normalises to nothing


def test_nq_style_example() -> None:
    gold = "the 1830s"
    assert metrics.contains_answer("The Democratic Party changed its name in the 1830s.", [gold])
    assert not metrics.contains_answer("It changed its name in 1828.", [gold])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She pays 5 + 3 = 8 dollars.\n#### 8", "8"),
        ("so #### 1,200\n", "1,200"),
        (r"The answer is $\boxed{\frac{1}{2}}$ and not 3.", r"\frac{1}{2}"),
        (r"\boxed{4} then \boxed{5}", "5"),
        ("First 12 apples, then 7.5 remain.", "7.5"),
        ("no numbers here", None),
    ],
)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert metrics.extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,200.50", Fraction(240100, 200)),
        ("3/4", Fraction(3, 4)),
        (r"\frac{3}{4}", Fraction(3, 4)),
        (r"\dfrac{6}{8}", Fraction(3, 4)),
        ("50%", Fraction(50)),
        ("18 dollars", Fraction(18)),
        ("-2.", Fraction(-2)),
        ("x + y", None),
        ("1/0", None),
    ],
)
def test_normalize_number(text: str, expected: Fraction | None) -> None:
    assert metrics.normalize_number(text) == expected


def test_final_answer_match_is_numeric() -> None:
    ref = "Natalia sold 48/2 = 24 clips in May.\n#### 72"
    assert metrics.final_answer_match("In total she sold **72.0** clips.", ref) is True
    assert metrics.final_answer_match(r"So the answer is $\boxed{72}$.", ref) is True
    assert metrics.final_answer_match("She sold 70 clips.", ref) is False
    assert metrics.final_answer_match("I cannot tell.", ref) is False
    assert metrics.final_answer_match("72", "no answer in here") is None


def test_format_features_count_markdown_structure() -> None:
    text = (
        "# Title\n\nIntro with **bold** and __more__.\n\n"
        "- one\n- two\n1. three\n\n"
        "```python\n# not a heading\n- not a list\n```\n\n"
        "Sub\n---\n\nLast paragraph."
    )
    f = metrics.format_features(text)
    assert f.headings == 2  # ATX + setext; the '#' inside the code block does not count
    assert f.list_items == 3
    assert f.code_blocks == 1
    assert f.bold == 2
    assert f.paragraphs == 4  # intro, the list, 'Sub' (its own block), last paragraph


def test_plain_text_has_no_structure() -> None:
    f = metrics.format_features("Just one line.")
    assert (f.list_items, f.headings, f.code_blocks, f.bold, f.paragraphs) == (0, 0, 0, 0, 1)


@pytest.mark.parametrize(
    ("question", "reference", "lines"),
    [
        # NQ-shaped list answers: every line is needed
        (
            "who are the artists in the traveling wilburys?",
            "Roy Orbison\nJeff Lynne\nBob Dylan",
            "all",
        ),
        ("5 cities with the highest population in europe?", "London\nBerlin\nMoscow", "all"),
        ("when did world war one begin and end?", "28 July 1914\n11 November 1918", "all"),
        ("where will the next summer and winter olympics be held?", "Beijing\nTokyo", "all"),
        ("what states were most affected by the dust bowl?", "Iowa\nKansas\nTexas", "all"),
        ("songs on 4 your eyez only j cole?", "Immortal\nChange\nNeighbors", "all"),
        (
            "when did ole miss beat alabama?",
            "\n".join(f"October {d}, 19{d}70" for d in range(7)),
            "all",
        ),
        # aliases: any one line is enough
        ("when did the democratic party change its name?", "the 1830s", "any"),
        ("who said that religion is the opiate of the masses?", "Karl Marx.\nKarl Marx", "any"),
        ("when was the first horrid henry book written?", "published in 1994\n1994", "any"),
        ("when did the movie karate kid come out?", "2010\n1984", "any"),
        ("where do rory and paris go to college?", "Yale University\nYale University,", "any"),
    ],
)
def test_reference_lines_tell_list_answers_from_aliases(
    question: str, reference: str, lines: str
) -> None:
    assert metrics.reference_lines(question, reference) == lines


def test_list_answer_containment_needs_every_line() -> None:
    q, ref = "who are the artists in the traveling wilburys?", "Roy Orbison\nBob Dylan\nTom Petty"
    some = metrics.response_metrics("Bob Dylan and Tom Petty.", ref, question=q)
    assert (some.answer_lines, some.answers_found, some.contains_answer) == ("all", 2, False)
    every = metrics.response_metrics("Roy Orbison, Bob Dylan and Tom Petty.", ref, question=q)
    assert (every.answers_found, every.contains_answer) == (3, True)
    # the same lines as aliases: one is enough
    alias = metrics.response_metrics("Bob Dylan.", ref, question="who wrote it?")
    assert (alias.answer_lines, alias.contains_answer) == ("any", True)
    assert metrics.contains_answer("Bob Dylan", ref.splitlines(), every=True) is False


def test_response_metrics_applies_math_match_only_where_it_belongs() -> None:
    nq = metrics.response_metrics("It was 2013.", "2013", "open_qa")
    assert nq.contains_answer is True and nq.answer_match is None
    gsm = metrics.response_metrics("The total is 10.", "5+5\n#### 10", None)
    assert gsm.answer_match is True
    none = metrics.response_metrics("It was 2013.", None)
    assert none.contains_answer is None and none.answer_match is None
    assert none.tokens > 0


def test_math_match_follows_the_criterion_header() -> None:
    from realign.criteria import load_pack

    # No `####` in the reference: only `answer: numeric` makes it a final-answer comparison.
    assert metrics.response_metrics("So 12 in all.", "12", "math_puzzles").answer_match is True
    assert metrics.response_metrics("So 12 in all.", "12", "open_qa").answer_match is None
    pack = load_pack()
    plain = pack["math_puzzles"].model_copy(update={"answer": "text"})
    own = pack.model_copy(update={"criteria": {**pack.criteria, "math_puzzles": plain}})
    assert metrics.response_metrics("So 12.", "12", "math_puzzles", pack=own).answer_match is None


def test_summarize_counts_only_items_with_references() -> None:
    items = [
        metrics.response_metrics("Paris is the capital.", "Paris"),
        metrics.response_metrics("Lyon, I think.", "Paris"),
        metrics.response_metrics("- a list\n- here", None),
    ]
    s = metrics.summarize(items)
    assert s.n == 3 and s.with_reference == 2
    assert s.containment_rate == pytest.approx(0.5)
    assert s.share_with_list == pytest.approx(1 / 3)
    assert s.answer_match_rate is None


# --- bootstrap ----------------------------------------------------------------------------


def test_bootstrap_is_deterministic_with_a_seed() -> None:
    data = [1, 0, 0, 1, 1, 0, 1, 1, 0, 1]
    a = metrics.bootstrap_ci(data, seed=3)
    assert a == metrics.bootstrap_ci(data, seed=3)
    assert a is not None and a[0] <= 0.6 <= a[1]
    scores = [float(x) for x in range(1, 41)]  # continuous enough for seeds to differ
    assert metrics.bootstrap_ci(scores, seed=3) != metrics.bootstrap_ci(scores, seed=4)


def test_bootstrap_empty_and_constant() -> None:
    assert metrics.bootstrap_ci([]) is None
    assert metrics.bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_bootstrap_resamples_clusters_as_a_whole() -> None:
    # Two records: one with 3 wins of 3 units, one with 0 of 1: the ratio of sums is 3/4.
    lo, hi = metrics.bootstrap_ci([3, 0], [3, 1], resamples=2000, seed=0)  # type: ignore[misc]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    lo, hi = metrics.bootstrap_ci([3, 0] * 50, [3, 1] * 50, seed=0)  # type: ignore[misc]
    assert lo < 0.75 < hi and hi - lo < 0.3


def test_bootstrap_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(12345)
    p, n, trials = 0.3, 200, 200
    covered = 0
    for t in range(trials):
        sample = (rng.random(n) < p).astype(float)
        lo, hi = metrics.bootstrap_ci(sample.tolist(), resamples=500, seed=t)  # type: ignore[misc]
        covered += lo <= p <= hi
    # Percentile intervals run slightly narrow at n=200; 95% nominal gives ~0.93-0.95.
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_memory_blocks_do_not_change_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    data = [float(i % 3 == 0) for i in range(300)]
    whole = metrics.bootstrap_ci(data, seed=1)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_CELLS", 1000)  # forces many small blocks
    blocked = metrics.bootstrap_ci(data, seed=1)
    assert whole is not None and blocked is not None
    # Different block shapes draw different random numbers: close, not identical.
    assert abs(whole[0] - blocked[0]) < 0.05 and abs(whole[1] - blocked[1]) < 0.05
