"""The filter's safety rules (issue 20), each with rewrites it must reject and faithful ones it
must accept, in varied wordings."""

from __future__ import annotations

import pytest

from realign.stages.filter import PRESETS, SAFETY_RULES, decide

MYTH_Q = "Is it true that the Great Wall of China is visible from space with the naked eye?"
MYTH = (
    "No, that is a myth. The wall is long but only a few metres wide, about the width of a "
    "road, so astronauts in low orbit cannot make it out without a camera lens. Many larger "
    "human works, such as airports and highways, are easier to see."
)
MYTH_EVIDENCE = [
    "The Great Wall of China is a series of fortifications built across the historical "
    "northern borders of ancient Chinese states, the Ming dynasty built most of what remains. "
    "Its total length is given as 21,196 km in a 2012 survey by the State Administration."
]


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    "rewrite",
    [
        # dropped: talks about the subject, never answers
        "## The Great Wall\n\nThe wall is long but only a few metres wide, about the width of a "
        "road. Astronauts in low orbit have described what they could make out with a lens, "
        "and airports and highways appear in their photos too.",
        # flipped
        "**Yes.** The wall is long but only a few metres wide, about the width of a road; "
        "still, astronauts in low orbit can make it out, like airports and highways.",
        "It is true: the wall, though only a few metres wide like a road, can be made out by "
        "astronauts in low orbit, as can airports and highways.",
    ],
)
def test_a_dropped_or_flipped_verdict_keeps_the_original(rewrite: str) -> None:
    d = decide(MYTH_Q, MYTH, rewrite, "fact_verification")
    assert d.keep_original and d.rule in ("verdict_lost", "off_topic"), d


@pytest.mark.parametrize(
    "rewrite",
    [
        "**No — this is a myth.**\n\n- The wall is long but only a few metres wide, about the "
        "width of a road.\n- Astronauts in low orbit cannot make it out without a camera lens."
        "\n- Larger human works, such as airports and highways, are easier to see.",
        "## Verdict\nFalse.\n\n## Why\nThe wall is only a few metres wide, about the width of a "
        "road, so astronauts in low orbit cannot make it out without a camera lens. Airports "
        "and highways, larger human works, are easier to see.",
        "That claim is not true. Although the wall is long, it is only a few metres wide (about "
        "a road's width), so astronauts in low orbit cannot make it out without a camera lens; "
        "larger human works such as airports and highways are easier to see.",
    ],
)
def test_the_same_verdict_in_other_words_passes(rewrite: str) -> None:
    d = decide(MYTH_Q, MYTH, rewrite, "fact_verification")
    assert d.rule == "passed", d


def test_verdicts_of_other_kinds() -> None:
    q = "Do you agree that remote work lowers productivity?"
    orig = (
        "I disagree. Studies of call-centre staff found that remote workers completed more "
        "calls, took fewer breaks and quit less often than their office colleagues."
    )
    flipped = (
        "I agree. Studies of call-centre staff found remote workers completed more calls, took "
        "fewer breaks and quit less often than office colleagues, but that is the exception."
    )
    kept = (
        "**I disagree.**\n\n- Studies of call-centre staff found that remote workers completed "
        "more calls.\n- They took fewer breaks and quit less often than office colleagues."
    )
    assert decide(q, orig, flipped, "open_qa").rule == "verdict_lost"
    assert decide(q, orig, kept, "open_qa").rule == "passed"
    q2 = "Is this SQL valid: SELECT name FROM users WHERE id = 3;"
    orig2 = "Yes, the statement is valid: it selects the name column of the user whose id is 3."
    bad2 = "The statement is invalid: it selects the name column of the user whose id is 3."
    assert decide(q2, orig2, bad2, "code_correction").rule == "verdict_lost"


# --------------------------------------------------------------------------- answers


def test_final_line_in_other_words_passes() -> None:
    orig = "She sells 16 - 3 - 4 = 9 eggs at $2 each: 9 * 2 = 18.\n#### 18"
    rw = (
        "**Step 1.** Eggs left: 16 - 3 - 4 = 9.\n**Step 2.** Income: 9 * 2 = 18 dollars.\n\n"
        "Therefore, the answer is 18."
    )
    assert decide("How much does she make?", orig, rw, "math_puzzles").rule == "passed"
    wrong = rw.replace("the answer is 18", "the answer is 19")
    assert decide("How much does she make?", orig, wrong, "math_puzzles").rule == (
        "final_answer_lost"
    )
    boxed = r"The area is $3 \times 4 = \boxed{12}$ square units."
    assert (
        decide(
            "Area of a 3 by 4 rectangle?",
            boxed,
            "Area: 3 × 4 = 12.\n\nThe answer is 12.",
            "math_puzzles",
        ).rule
        == "passed"
    )


def test_every_list_item_must_survive() -> None:
    q = "List the three primary colours of light and what they mix into."
    orig = "- Red: with green it makes yellow\n- Green: with blue it makes cyan\n- Blue: with red it makes magenta"
    lost = "## Primary colours\n\n1. **Red** mixes with green into yellow.\n2. **Green** mixes with blue into cyan."
    kept = (
        "## Primary colours of light\n\n1. **Red** mixes with green into yellow.\n"
        "2. **Green** mixes with blue into cyan.\n3. **Blue** mixes with red into magenta."
    )
    assert decide(q, orig, lost, "open_qa").rule in ("list_items_lost", "length_ratio")
    assert decide(q, orig, kept, "open_qa").rule == "passed"
    # with a short original the length rule cannot see it: the list rule does
    orig2 = (
        "1. Mercury, the smallest\n2. Venus, the hottest\n3. Earth, our home\n4. Mars, the red one"
    )
    lost2 = (
        "The inner planets, closest first:\n\n- **Mercury**, the smallest\n- **Venus**, the "
        "hottest\n- **Earth**, our home"
    )
    assert decide("Name the inner planets.", orig2, lost2, "open_qa").rule == "list_items_lost"


# --------------------------------------------------------------------------- code

CODE_Q = "Write a Python function that reverses a string."
CODE = "Use slicing:\n\n```python\ndef reverse(s):\n    return s[::-1]\n```\n\nIt returns a new string."


def test_changed_code_keeps_the_original() -> None:
    changed = (
        "## Solution\n\nUse slicing:\n\n```python\ndef reverse(s):\n    return s[::-2]\n```\n\n"
        "## Notes\nIt returns a new string."
    )
    other = (
        "## Solution\n\nUse a loop:\n\n```python\ndef reverse(s):\n    return ''.join(reversed(s))"
        "\n```\n\nIt returns a new string."
    )
    assert decide(CODE_Q, CODE, changed, "code_generation").rule == "code_changed"
    assert decide(CODE_Q, CODE, other, "code_generation").rule == "code_changed"


def test_reindented_or_commented_code_passes() -> None:
    same = (
        "## Solution\n\nUse slicing:\n\n```python\n# a step of -1 walks backwards\n"
        "def reverse(s):\n        return s[::-1]  # new string\n```\n\n## Notes\n"
        "It returns a new string."
    )
    assert decide(CODE_Q, CODE, same, "code_generation").rule == "passed"


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    "rewrite",
    [
        "No, that is a myth. The wall is long but only a few metres wide, about the width of a "
        "road, so astronauts in low orbit cannot make it out without a camera lens. Many "
        "larger human works, such as airports and",
        "**No, it is a myth.**\n\nThe wall is long but only a few metres wide, about the width "
        "of a road, so astronauts in low orbit cannot make it out without a camera lens. "
        "Larger human works, such as airports and highways, are easier to",
    ],
)
def test_a_rewrite_cut_mid_sentence_is_rejected(rewrite: str) -> None:
    assert decide(MYTH_Q, MYTH, rewrite, "fact_verification").rule == "truncated"


def test_cut_code_and_finish_reason_length() -> None:
    cut = "Use slicing:\n\n```python\ndef reverse(s):\n    return s[::-1"
    assert decide(CODE_Q, CODE, cut + "\n", "code_generation").rule in ("truncated", "code_changed")
    cut2 = "Use slicing:\n\n```python\ndef reverse(s):\n    return (s[::-1]\n```\nIt returns a new string."
    assert decide(CODE_Q, CODE, cut2, "code_generation").rule in ("truncated", "code_changed")
    good = "**No, it is a myth.** " + MYTH[len("No, that is a myth. ") :]
    assert decide(MYTH_Q, MYTH, good, "fact_verification").rule == "passed"
    d = decide(MYTH_Q, MYTH, good, "fact_verification", finish_reason="length")
    assert d.rule == "truncated" and "length" in d.reason


def test_lists_and_headings_need_no_full_stop() -> None:
    q = "What should I pack for a day hike?"
    orig = "Pack water, snacks, a map, sunscreen and a rain jacket for a day hike."
    rw = "## Day-hike packing list\n\n- Water\n- Snacks\n- A map\n- Sunscreen\n- A rain jacket"
    assert decide(q, orig, rw, "open_qa").rule == "passed"


# --------------------------------------------------------------------------- meta-text


@pytest.mark.parametrize(
    "rewrite",
    [
        "This answer meets all the requirements of the requested format and is well organised.",
        "This request meets all the specified criteria, so the response is structured clearly.",
        "The requested format is designed for clarity: each part follows the guidelines given.",
        "Below is the rewritten version, which adheres to the instructions provided above.",
        "Here is my revision of the reply, restructured to satisfy the rubric.",
        "The output follows the template: a heading, then bullet points, then a summary.",
        "I'm sorry, but I cannot verify that claim.",
        "It is hard to say for sure without more data on the subject.",
        "I don't have enough information to answer that.",
    ],
)
def test_meta_text_and_refusals_in_new_wordings(rewrite: str) -> None:
    d = decide(MYTH_Q, MYTH, rewrite, "fact_verification")
    assert d.keep_original and d.rule == "meta_text", d


def test_talk_about_formats_is_fine_when_formats_are_the_subject() -> None:
    q = "What format should a cover letter follow?"
    orig = (
        "A cover letter follows a business-letter format: your contact details, the date, a "
        "greeting, three short paragraphs on why you fit the role, and a formal sign-off."
    )
    rw = (
        "A cover letter follows a **business-letter format**:\n\n1. Your contact details and the "
        "date\n2. A greeting\n3. Three short paragraphs on why you fit the role\n4. A formal "
        "sign-off"
    )
    assert decide(q, orig, rw, "open_qa").rule == "passed"


# --------------------------------------------------------------------------- off-topic


def test_copied_evidence_or_another_question_is_rejected() -> None:
    copied = (
        "The Great Wall is a series of fortifications built across the historical northern "
        "borders of ancient Chinese states; the Ming dynasty built most of what remains."
    )
    d = decide(MYTH_Q, MYTH, copied, "fact_verification", evidence=MYTH_EVIDENCE)
    assert d.keep_original and d.rule in ("verdict_lost", "off_topic"), d
    q = "Why do onions make you cry?"
    orig = (
        "Cutting an onion breaks its cells, releasing enzymes that turn sulfur compounds into "
        "a gas, syn-propanethial-S-oxide. The gas reaches your eyes and irritates them, so "
        "tear glands flush it out."
    )
    other = (
        "## Why garlic smells\n\nCrushing garlic breaks its cells, releasing alliinase that "
        "turns alliin into allicin, which gives the sharp smell and fades as it cooks."
    )
    assert decide(q, orig, other, "open_qa").rule == "off_topic"


def test_a_shorter_but_complete_answer_passes() -> None:
    q = "Why do onions make you cry?"
    orig = (
        "Cutting an onion breaks its cells, releasing enzymes that turn sulfur compounds into "
        "a gas, syn-propanethial-S-oxide. The gas reaches your eyes and irritates them, so "
        "your tear glands flush it out. Chilling the onion first slows the enzymes down."
    )
    rw = (
        "**Short answer:** cutting breaks the onion's cells, and enzymes turn sulfur compounds "
        "into an irritating gas (syn-propanethial-S-oxide) that your tear glands flush out "
        "of your eyes. Chilling the onion slows the enzymes."
    )
    assert decide(q, orig, rw, "open_qa").rule == "passed"


# --------------------------------------------------------------------------- invented content


def test_invented_numbers_names_and_dates_are_rejected() -> None:
    q = "Who built the first practical telephone?"
    orig = (
        "Alexander Graham Bell is credited with the first practical telephone, patented in "
        "1876, though Elisha Gray filed a similar design the same day."
    )
    year = orig.replace("1876", "1877") + "\n\nIt changed communication."
    name = (
        "**Alexander Graham Bell** is credited with the first practical telephone, patented "
        "in 1876, though Elisha Gray and Thomas Edison filed similar designs the same day."
    )
    number = (
        "**Alexander Graham Bell** is credited with the first practical telephone, patented "
        "in 1876 after 240 trials, though Elisha Gray filed a similar design the same day."
    )
    # a changed year is also lost from this brief answer (short_answer_lost runs first)
    assert decide(q, orig, year, "open_qa").rule in ("short_answer_lost", "invented_content")
    for rw in (name, number):
        assert decide(q, orig, rw, "open_qa").rule == "invented_content", rw
    # the same facts from the search evidence are grounded, not invented
    ev = ["Bell's patent, 174,465, was granted on March 7, 1876; Thomas Edison later improved it."]
    grounded = (
        "**Alexander Graham Bell** is credited with the first practical telephone (patent "
        "174,465, granted March 7, 1876), though Elisha Gray filed a similar design the same "
        "day; Thomas Edison later improved it."
    )
    assert decide(q, orig, grounded, "open_qa", evidence=ev).rule == "passed"
    assert decide(q, orig, grounded, "open_qa").rule == "invented_content"


def test_reformatted_numbers_are_not_invented() -> None:
    q = "How tall is Mount Everest and how fast is it rising?"
    orig = "Mount Everest is 8,849 metres tall and rises by about five millimetres a year."
    rw = "- **Height:** 8849 metres\n- **Growth:** about 5 millimetres a year\n\nMount Everest keeps rising."
    assert decide(q, orig, rw, "open_qa").rule == "passed"
    pct = "Roughly five percent of the water on Earth is fresh water; the rest is salty seawater."
    assert (
        decide(
            "How much water is fresh?",
            pct,
            "About **5%** of Earth's water is fresh water; the rest is salty seawater.",
            "open_qa",
        ).rule
        == "passed"
    )


# --------------------------------------------------------------------------- language


def test_a_switch_of_language_is_rejected() -> None:
    q = "Why is the sky blue?"
    orig = (
        "Sunlight is scattered by the molecules of the air, and blue light is scattered much "
        "more than red light because of its shorter wavelength, so the sky looks blue."
    )
    spanish = (
        "La luz del sol es dispersada por las moléculas del aire, y la luz azul se dispersa "
        "mucho más que la roja por su longitud de onda más corta, así que el cielo se ve azul."
    )
    assert decide(q, orig, spanish, "open_qa").rule == "language_switch"
    german = (
        "## Warum der Himmel blau ist\n\nDas Sonnenlicht wird an den Molekülen der Luft "
        "gestreut, und blaues Licht wird wegen seiner kürzeren Wellenlänge viel stärker "
        "gestreut als rotes, deshalb sieht der Himmel blau aus."
    )
    assert decide(q, orig, german, "open_qa").rule == "language_switch"
    english = "**Short answer:** " + orig
    assert decide(q, orig, english, "open_qa").rule == "passed"
    # a short answer is too short to tell its language: the answer rules judge it
    assert decide("Capital of Spain?", "Madrid", "Madrid es la capital.", "open_qa").rule != (
        "language_switch"
    )


def test_every_preset_runs_every_safety_rule() -> None:
    for name, rules in PRESETS.items():
        assert set(SAFETY_RULES) <= set(rules), name
        d = decide(MYTH_Q, MYTH, "Yes. " + MYTH[4:], "fact_verification", name)
        assert d.keep_original, (name, d)


# --------------------------------------------------------------------------- more wordings

PETS_Q = "Compare cats and dogs as pets."
PETS = (
    "Cats are independent and can be left alone for a day, but they are less trainable than "
    "dogs. Dogs are loyal and need daily walks, more attention and more space."
)


@pytest.mark.parametrize(
    "rewrite",
    [
        "## Cats vs dogs\n\n- **Cats:** independent, but they cannot be left alone for a day, "
        "and they are less trainable than dogs.\n- **Dogs:** loyal; they need daily walks, "
        "more attention and more space.",
        "## Cats vs dogs\n\n- **Cats:** independent and can be left alone for a day, but they "
        "are more trainable than dogs.\n- **Dogs:** loyal; they need daily walks, more "
        "attention and more space.",
    ],
)
def test_a_restated_sentence_with_its_polarity_reversed_contradicts(rewrite: str) -> None:
    d = decide(PETS_Q, PETS, rewrite, "analysis")
    assert d.rule == "invented_content" and ("negates" in d.reason or "where" in d.reason), d


def test_the_same_polarity_in_other_words_passes() -> None:
    rw = (
        "| | Cats | Dogs |\n|---|---|---|\n| Independence | independent, can be left alone for "
        "a day | loyal, need more attention |\n| Training | less trainable than dogs | - |\n"
        "| Needs | - | daily walks and more space |"
    )
    assert decide(PETS_Q, PETS, rw, "analysis").rule == "passed"
    q = "Is this comment positive? 'The meeting moved to 3 pm.'"
    orig = "Neutral. It simply states a fact about the schedule without expressing any feeling."
    rw2 = "**Sentiment:** Neutral\n\n**Reason:** it states a fact about the schedule and expresses no feeling."
    assert decide(q, orig, rw2, "sentiment_analysis").rule == "passed"


def test_a_rewrite_cut_inside_a_word_or_bare_code_changed() -> None:
    q = "How do I change a flat tyre?"
    orig = (
        "Loosen the wheel nuts, jack up the car, swap the flat tyre for the spare, lower the car "
        "and then tighten the nuts fully in a star pattern."
    )
    cut = (
        "## Changing a flat tyre\n\n1. Loosen the wheel nuts.\n2. Jack up the car.\n3. Swap the "
        "flat tyre for the spare.\n4. Lower the car.\n5. Tighten the nuts fully in a st"
    )
    assert decide(q, orig, cut, "how_to_generation").rule == "truncated"
    add_q = "Write a function that adds two numbers."
    bare = "def add(a, b):\n    return a + b"
    assert decide(
        add_q, bare, "```python\ndef add(a, b):\n    return a - b\n```", "code_generation"
    ).rule == ("code_changed")
    fenced = "```python\n# adds them\ndef add(a, b):\n    return a + b\n```"
    assert decide(add_q, bare, fenced, "code_generation").rule == "passed"  # code alone is fine


def test_brief_answers_keep_their_names_formulas_and_items() -> None:
    q = "What is the time complexity of binary search?"
    orig = "O(log n), because each step halves the search interval."
    assert (
        decide(
            q, orig, "**Time complexity:** O(n), since each step checks one element.", "open_qa"
        ).rule
        == "short_answer_lost"
    )
    assert (
        decide(
            q,
            orig,
            "**Time complexity:** O(log n)\n\n**Why:** each step halves the search interval.",
            "open_qa",
        ).rule
        == "passed"
    )
    q2 = "Which planet is known as the Red Planet?"
    orig2 = "Mars is known as the Red Planet because of the iron oxide on its surface."
    lost = "The **Red Planet** gets its name from the iron oxide on its surface."
    assert decide(q2, orig2, lost, "open_qa").rule == "short_answer_lost"
    q3 = "What are the primary colours of paint?"
    orig3 = "The traditional primary colours of paint are red, yellow and blue."
    assert (
        decide(
            q3, orig3, "The traditional primary colours are **red** and **blue**.", "open_qa"
        ).rule
        == "short_answer_lost"
    )
    assert decide(q3, orig3, "- Red\n- Yellow\n- Blue", "open_qa").rule == "passed"
    # the question's own words are its subject, not the answer
    assert (
        decide(
            "What is the capital of France?",
            "Paris is the capital of France.",
            "**Answer:** Paris",
            "open_qa",
        ).rule
        == "passed"
    )
    # a polite "Yes!" to a request is no answer to keep
    q4 = "Can you give me a recipe for pancakes?"
    orig4 = (
        "Yes! Mix 1 cup of flour, 1 egg and 1 cup of milk, then fry spoonfuls of batter in a "
        "hot buttered pan until golden on both sides."
    )
    rw4 = (
        "## Simple pancakes\n\n**Ingredients:**\n- 1 cup of flour\n- 1 egg\n- 1 cup of milk\n\n"
        "**Method:**\n1. Mix the flour, egg and milk into a batter.\n2. Fry spoonfuls in a hot "
        "buttered pan until golden on both sides."
    )
    assert decide(q4, orig4, rw4, "how_to_generation").rule == "passed"


def test_evidence_copied_instead_of_the_answer() -> None:
    ev = [
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
        "France. It is named after the engineer Gustave Eiffel, whose company designed and "
        "built the tower from 1887 to 1889."
    ]
    q = "What does the Eiffel Tower look like?"
    orig = (
        "It is a tall iron lattice tower that narrows towards the top, with three levels of "
        "platforms and an antenna at the summit, painted a brownish bronze colour."
    )
    copied = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
        "France. It is named after the engineer Gustave Eiffel, whose company designed and "
        "built the tower."
    )
    assert decide(q, orig, copied, "open_qa", evidence=ev).rule == "off_topic"
    grounded = (
        "## The Eiffel Tower\n\n- A tall **wrought-iron** lattice tower that narrows towards "
        "the top\n- Three levels of platforms, an antenna at the summit\n- Painted a brownish "
        "bronze colour\n\nIt stands on the Champ de Mars in Paris."
    )
    assert decide(q, orig, grounded, "open_qa", evidence=ev).rule == "passed"


SKY_Q = "Why is the sky blue?"
SKY = (
    "Sunlight contains all colours. When it enters the atmosphere, the short blue wavelengths "
    "are scattered by air molecules far more than the long red ones (Rayleigh scattering), so "
    "blue light reaches our eyes from every direction of the sky."
)


@pytest.mark.parametrize(
    ("rewrite", "rule"),
    [
        (
            "Certainly! Here is the reformatted answer, now organised with headings and bullet "
            "points as required.",
            "meta_text",
        ),
        ("In accordance with the guidelines, the reply below is presented concisely.", "meta_text"),
        (
            "This version keeps all of the facts from the original answer while improving its "
            "structure.",
            "meta_text",
        ),
        ("I'm afraid I can't give a definitive explanation of this.", "meta_text"),
        (
            "That's a great question! Many people have wondered about the colour of the sky for "
            "centuries, and scientists have studied it closely.",
            "off_topic",
        ),
        (
            "At sunset, sunlight travels through much more of the atmosphere, so most of the blue "
            "light is scattered away before it reaches us and the sky looks red and orange.",
            "off_topic",
        ),
        (
            "Sunlight contains all colours. When it enters the atmosphere, the long red wavelengths "
            "are scattered by air molecules far more than the short blue ones, so red light "
            "reaches our eyes from every direction.",
            "invented_content",
        ),
    ],
)
def test_sky_rewrites_that_lose_the_answer(rewrite: str, rule: str) -> None:
    d = decide(SKY_Q, SKY, rewrite, "explain_answer")
    assert d.keep_original and d.rule == rule, d


@pytest.mark.parametrize(
    "rewrite",
    [
        "## Why the sky is blue\n\n1. **Sunlight** contains all colours.\n2. In the atmosphere, "
        "air molecules scatter the **short blue wavelengths** far more than the long red ones "
        "— this is *Rayleigh scattering*.\n3. So blue light reaches our eyes from every "
        "direction of the sky.",
        "**Short answer:** air molecules scatter blue light much more than red light (Rayleigh "
        "scattering).\n\nSunlight contains all colours; the short blue wavelengths get "
        "scattered in every direction, so the whole sky looks blue.",
    ],
)
def test_sky_rewrites_that_keep_it(rewrite: str) -> None:
    assert decide(SKY_Q, SKY, rewrite, "explain_answer").rule == "passed"
