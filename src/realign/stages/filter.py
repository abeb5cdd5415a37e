"""Stage 4: rule-based filter, no LLM. Keeps the original whenever the rewrite might be worse.

A preset names the rules to run, in order; the first that fires decides, and its name is
recorded with the decision (with the preset and every rule it checked). The presets follow
ReAlign's per-dataset selection rules (`rewrite_data_selection.py` of GAIR-NLP/ReAlign), each
plus two rules every preset runs first: `unchanged` (an unchanged copy is not a rewrite) and
`meta_text` (refusals and leaked rewriting chatter are never better than an answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from realign import tokens
from realign.criteria import CriteriaPack, numeric_answer
from realign.metrics import (
    GSM8K,
    NUMBER,
    boxed_contents,
    has_explicit_final_answer,
    normalize_number,
)
from realign.records import FilterDecision

MIN_LENGTH_RATIO = 0.5
# An original this short is the answer itself (a name, a date, "B", "True"): its words must
# all be in the rewrite. Longer originals are checked through a stated answer ("The answer
# is (C).") when they have one.
SHORT_ANSWER_WORDS = 8

_FENCE = re.compile(r"```")
_FUNC_DEF = re.compile(
    r"^\s*(?:async\s+)?def\s+\w+\s*\(|"  # Python
    r"\bfunction\s+\w+\s*\(|"  # JavaScript / PHP
    r"^\s*(?:public|private|protected|static|\s)+[\w<>\[\]]+\s+\w+\s*\([^)]*\)\s*\{|"  # Java/C#
    r"^\s*(?:int|void|char|float|double|bool|auto)\s+\w+\s*\([^)]*\)\s*\{|"  # C/C++
    r"^\s*fn\s+\w+\s*\(|^\s*func\s+\w+\s*\(",  # Rust, Go
    re.MULTILINE,
)
_PLAN_WORDS = re.compile(
    r"\b(plan|planning|schedule|itinerary|roadmap|timeline|agenda|strategy|steps?|"
    r"organi[sz]e|prepare|outline|routine|program(?:me)?|calendar|checklist)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
# An option letter as answers write it: "(C)", "C)", "C.", "C:" or a capital letter alone.
_OPTION = re.compile(r"\(([A-Za-z])\)|(?<![\w(])([A-Z])(?:[).:]|\s*$)")
# Words that frame a short answer rather than carry it ("It is Paris." carries "Paris").
_FRAME_WORDS = frozenset(
    re.findall(
        r"\S+",
        """a an the is are was were be been it its s this that these those there here of in on
        at to for from by with as and or so then thus therefore hence answer correct right
        option choice final i we you he she they his her their my our your think believe
        guess say says""",
    )
)
_STATED_ANSWER = re.compile(
    r"(?:\b(?:the\s+)?(?:correct\s+|final\s+|right\s+|best\s+)?answer\s+(?:is|would be)"
    r"|\banswer\s*:)\s*:?\s*(.+)",
    re.IGNORECASE,
)
# Where a response names the option it chooses: "the answer is (C)", "**Final answer:** C",
# "the correct option is C", "(C) is correct", "I'd choose C". A bare letter must be a capital.
_LETTER = r"(?:\(([A-Za-z])\)|\b([A-Z])\b)(?!['’\w])"
_CHOSEN_LETTER = re.compile(
    r"(?i:answer)\s*(?:(?i:is|would be)|:)\s*:?\s*\**\s*" + _LETTER + "|"
    r"(?i:correct|right|best)\s+(?i:option|choice|answer)\s*(?:(?i:is)|:)\s*\**\s*"
    r"(?:(?i:option)\s+)?" + _LETTER + "|"
    r"(?:(?i:option|choice)\s+)?" + _LETTER + r"\**\s+(?i:is)\s+(?:(?i:the)\s+)?"
    r"(?i:correct|right|best)|"
    r"(?i:choose|pick|select|go with)\s+(?:(?i:option)\s+)?" + _LETTER
)
# Else a response that opens with its option: "(C) fits best.", "**C.** Carbon dioxide".
_OPENING_LETTER = re.compile(r"\A[\s*_#>]*(?:\(([A-Za-z])\)|([A-Z])(?:[.):]|\s*\Z))")
# Text about the rewriting itself, or prompt-template debris (Open-Platypus, Alpaca).
_LEAKS = re.compile(
    r"\b(?:revised|rewritten|original|improved) response\b|\bformat guide\b|"
    r"###\s*(?:instruction|response|input)\s*:|\bas an ai(?: language model)?,",
    re.IGNORECASE,
)
# Refusals and non-answers that replace an answer the original gave.
_REFUSALS = re.compile(
    r"\bI(?:'m| am) not (?:sure|certain)\b|\bI (?:do not|don't) know\b|"
    r"\b(?:is|are|was|were) not (?:provided|given|mentioned|specified|stated)\b|"
    r"\bnot (?:provided|given|mentioned|specified|stated) in the\b|"
    r"\bI (?:cannot|can't|can not|am unable to|'m unable to|am not able to) "
    r"(?:answer|provide|determine|help|say)\b|"
    r"\bthere is no (?:information|answer|way to (?:know|tell|determine))\b",
    re.IGNORECASE,
)
_QUESTION_NUMBER = re.compile(r"\d*\.?\d+")


def has_code(text: str) -> bool:
    return bool(_FENCE.search(text) or _FUNC_DEF.search(text))


def same_number(a: str, b: str) -> bool:
    """Equal as numbers ('1,000' == '1000.0' == '\\frac{2000}{2}'), else as trimmed text."""
    na, nb = normalize_number(a), normalize_number(b)
    if na is not None and nb is not None:
        return na == nb
    return a.strip().lower() == b.strip().lower()


def last_number(text: str) -> str | None:
    nums = NUMBER.findall(text)
    return nums[-1] if nums else None


def answer_terms(answer: str) -> list[str]:
    """The words that carry a short answer: all of a one-word answer ("B", "a", "True"),
    else its words minus framing words, plus any option letter ("(C)", "C.")."""
    text = _THOUSANDS.sub("", answer)
    words = _WORD.findall(text)
    if len(words) <= 1:
        return words
    terms = [w for w in words if (len(w) > 1 or w.isdigit()) and w.lower() not in _FRAME_WORDS]
    terms += [a or b for a, b in _OPTION.findall(text)]
    return list(dict.fromkeys(terms))


def has_term(term: str, text: str) -> bool:
    """`term` as a whole word of `text`. Single letters are case-sensitive (an option "A" is
    not the article "a"), everything else is not."""
    text = _THOUSANDS.sub("", text)
    if len(term) == 1:
        return re.search(rf"(?<![^\W_]){re.escape(term)}(?![^\W_])", text) is not None
    return term.lower() in {w.lower() for w in _WORD.findall(text)}


def chosen_letters(text: str) -> set[str]:
    """The option letters `text` says it chooses (upper case)."""
    said = {g.upper() for m in _CHOSEN_LETTER.finditer(text) for g in m.groups() if g}
    if not said and (m := _OPENING_LETTER.match(text)):
        said = {(m.group(1) or m.group(2)).upper()}
    return said


def stated_answer(text: str) -> str | None:
    """The answer a response states in so many words ("The answer is (C).", "Answer: 42"),
    up to the end of its sentence; the last one wins."""
    found = None
    for m in _STATED_ANSWER.finditer(text):
        found = re.split(r"(?<=[^\s.])\.(?:\s|$)|\n", m.group(1))[0].strip(" *.")
    return found or None


# Each rule: (instruction, original, rewrite, task_type, numeric) -> reason it fires, or None.
# `numeric`: the task type's criterion says `answer: numeric` (see `criteria.numeric_answer`).
Rule = Callable[[str, str, str, str, bool], str | None]


def rule_unchanged(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    if " ".join(original.split()) == " ".join(rewrite.split()):
        return "the rewrite is the original unchanged"
    return None


def rule_meta_text(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    leak = _LEAKS.search(rewrite)
    if leak and not _LEAKS.search(original):
        return f"the rewrite talks about the rewriting or the prompt: {leak.group(0)!r}"
    if task_type == "rejecting" or _REFUSALS.search(original):
        return None  # the original already declines: saying so again is fine
    refusal = _REFUSALS.search(rewrite)
    if refusal:
        return (
            f"the rewrite refuses or gives no answer where the original did: {refusal.group(0)!r}"
        )
    return None


def rule_length_ratio(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    o, r = tokens.count(original), tokens.count(rewrite)
    if r < MIN_LENGTH_RATIO * o:
        return f"rewrite has {r} tokens, under {MIN_LENGTH_RATIO}x the original's {o}"
    return None


def rule_code_mismatch(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    o, r = has_code(original), has_code(rewrite)
    if o != r:
        return (
            "the original contains code but the rewrite does not"
            if o
            else ("the rewrite adds code the original did not have")
        )
    return None


def rule_short_answer(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    o = original.strip()
    if has_explicit_final_answer(o):
        return None  # `#### N` / `\boxed{}`: final_answer_lost compares it as a number
    if numeric and NUMBER.search(o):
        return None  # "3 + 4 = 7": the result matters, not the operands (final_answer_lost)
    if len(_WORD.findall(o)) <= SHORT_ANSWER_WORDS:
        answer, what = o, "original short answer"
    else:
        stated = stated_answer(o)
        if stated is None or len(_WORD.findall(stated)) > SHORT_ANSWER_WORDS:
            return None
        answer, what = stated, "original's stated answer"
    terms = answer_terms(answer)
    letters = {t.upper() for t in terms if len(t) == 1 and t.isalpha()}
    other = chosen_letters(rewrite) - letters
    if len(letters) == 1 and other:
        # The letter may still appear ("A is tempting, but..."): what counts is the choice.
        return f"the rewrite chooses {', '.join(sorted(other))}; the {what} is {answer!r}"
    missing = [t for t in terms if not has_term(t, rewrite)]
    if missing:
        return f"the {what} {answer!r} is not in the rewrite (missing {', '.join(missing)})"
    return None


def rule_final_answer(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    m = GSM8K.findall(original)
    if m:
        want, got = m[-1].strip(), GSM8K.findall(rewrite)
        # The last `####` line is the one graders read.
        if not (got and same_number(want, got[-1].strip())):
            return f"the original final answer '#### {want}' is lost"
        return None
    ob = boxed_contents(original)
    if ob:
        rb = boxed_contents(rewrite)
        if not (rb and same_number(ob[-1], rb[-1])):
            return f"the original final answer \\boxed{{{ob[-1]}}} is lost"
        return None
    if numeric:
        last = last_number(original)
        said = last_number(rewrite)
        if last is not None and not (said is not None and same_number(last, said)):
            # A closing line such as "That gives 7 in total." still states the answer.
            tail = rewrite.strip().split("\n")[-1]
            if not any(same_number(last, x) for x in NUMBER.findall(tail)):
                return f"the original's last number {last} is not the rewrite's final answer"
    return None


def rule_planning(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    if task_type == "planning" and not _PLAN_WORDS.search(instruction):
        return "task type is planning but the request does not ask for a plan"
    return None


def rule_default_type(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    if task_type == "default":
        return "task type is default: no format to follow"
    return None


def rule_math_without_numbers(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    if task_type == "math_puzzles" and not _QUESTION_NUMBER.search(instruction):
        return "task type is math_puzzles but the request has no number"
    return None


def rule_exam_short_original(
    instruction: str, original: str, rewrite: str, task_type: str, numeric: bool
) -> str | None:
    # ReAlign's exam rule: an exam answer of at most 5 characters ("B", "True", "42") is
    # the answer a grader reads; a rewrite buries it, so the original stays.
    if task_type == "exam_problem_solving_tutor" and len(original.strip()) <= 5:
        return f"exam answer {original.strip()!r} has at most 5 characters: kept as it is"
    return None


RULES: dict[str, Rule] = {
    "unchanged": rule_unchanged,
    "meta_text": rule_meta_text,
    "default_type": rule_default_type,
    "planning_not_requested": rule_planning,
    "math_without_numbers": rule_math_without_numbers,
    "length_ratio": rule_length_ratio,
    "code_mismatch": rule_code_mismatch,
    "short_answer_lost": rule_short_answer,
    "final_answer_lost": rule_final_answer,
    "exam_short_original": rule_exam_short_original,
}

_FIRST = ("unchanged", "meta_text")
PRESETS: dict[str, tuple[str, ...]] = {
    "default": (
        *_FIRST,
        "planning_not_requested",
        "length_ratio",
        "code_mismatch",
        "final_answer_lost",
        "short_answer_lost",
    ),
    # ReAlign: a one-character answer must stay a standalone token (case-sensitive), True/False
    # answers pass; code must not appear or vanish; the rewrite must keep half the length.
    "open-platypus": (*_FIRST, "short_answer_lost", "code_mismatch", "length_ratio"),
    # ReAlign: no rewrite of the `default` type; `planning` only when a plan was asked for.
    "no-robots": (
        *_FIRST,
        "default_type",
        "planning_not_requested",
        "code_mismatch",
        "length_ratio",
    ),
    "gsm8k": (*_FIRST, "final_answer_lost", "length_ratio"),
    # ReAlign: math_puzzles only when the question has a number.
    "math": (*_FIRST, "math_without_numbers", "final_answer_lost", "length_ratio"),
    # ReAlign's Alpaca selection (code, then length) and its exam rule for that type.
    "alpaca": (*_FIRST, "exam_short_original", "code_mismatch", "length_ratio"),
}
DEFAULT_PRESET = "default"


def decide(
    instruction: str,
    original: str,
    rewrite: str,
    task_type: str,
    preset: str = DEFAULT_PRESET,
    pack: CriteriaPack | None = None,
) -> FilterDecision:
    """The first rule of `preset` that fires, else `passed`. Whether the answer is a number
    comes from the task type's criterion in `pack` (else in the built-in pack)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown filter preset {preset!r}: use {', '.join(PRESETS)}")
    names = PRESETS[preset]
    numeric = numeric_answer(task_type, pack)
    for name in names:
        reason = RULES[name](instruction, original, rewrite, task_type, numeric)
        if reason is not None:
            return FilterDecision(
                keep_original=True, rule=name, reason=reason, preset=preset, checked=list(names)
            )
    return FilterDecision(
        keep_original=False,
        rule="passed",
        reason="all rules passed",
        preset=preset,
        checked=list(names),
    )
