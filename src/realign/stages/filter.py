"""Stage 4: rule-based filter, no LLM. Keeps the original whenever the rewrite might be worse.

A preset names the rules to run, in order; the first that fires decides, and its name is
recorded with the decision (with the preset and every rule it checked). The presets follow
ReAlign's per-dataset selection rules (`rewrite_data_selection.py` of GAIR-NLP/ReAlign). Every
preset runs `unchanged` (an unchanged copy is not a rewrite) and `meta_text` (refusals and talk
about the response are never better than an answer) first, and after its own rules the safety
rules of `filter_rules.py` (truncation, language, verdicts, answers, list items, code, off-topic
and invented content): the original is kept whenever the rewrite might have lost, changed or
invented content.

Each rule takes one `FilterInput` (see `filter_text.py`) and returns the reason it fires, or
None; `RULES` names them and `PRESETS` orders them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from realign import tokens
from realign.criteria import CriteriaPack, numeric_answer
from realign.metrics import GSM8K, NUMBER, boxed_contents, has_explicit_final_answer
from realign.records import FilterDecision
from realign.stages import filter_rules as safety
from realign.stages.filter_answers import (
    BRIEF_ANSWER_WORDS,
    answer_not_subject,
    answer_terms,
    brief_terms,
    chosen_letters,
    final_answers,
    has_code,
    has_term,
    last_number,
    order_lost,
    same_number,
    stated_answer,
)
from realign.stages.filter_text import (
    FilterInput,
    code_blocks,
    digit_numbers,
    number_values,
    strip_comments,
    word_count,
)

__all__ = ["DEFAULT_PRESET", "PRESETS", "RULES", "FilterInput", "decide", "has_code", "last_number"]

MIN_LENGTH_RATIO = 0.5
# An original this short is the answer itself (a name, a date, "B", "True"): its words must
# all be in the rewrite. Longer originals are checked through a stated answer ("The answer
# is (C).") when they have one.
SHORT_ANSWER_WORDS = 8

_PLAN_WORDS = re.compile(
    r"\b(plan|planning|schedule|itinerary|roadmap|timeline|agenda|strategy|steps?|"
    r"organi[sz]e|prepare|outline|routine|program(?:me)?|calendar|checklist)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]+")
_LEAKS = re.compile(
    r"\b(?:revised|rewritten|original|improved) response\b|\bformat guide\b|"
    r"###\s*(?:instruction|response|input)\s*:|\bas an ai(?: language model)?,",
    re.IGNORECASE,
)
_QUESTION_NUMBER = re.compile(r"\d*\.?\d+")

# A preset whose datasets are graded by their `####` / `\boxed{}` line must keep that line; the
# others accept the same final number in other words ("Therefore, the answer is 18.").
MARKED_ANSWER_PRESETS = frozenset({"gsm8k", "math"})

Rule = Callable[[FilterInput], str | None]


def rule_unchanged(x: FilterInput) -> str | None:
    if " ".join(x.original.split()) == " ".join(x.rewrite.split()):
        return "the rewrite is the original unchanged"
    return None


def rule_meta_text(x: FilterInput) -> str | None:
    leak = _LEAKS.search(x.rewrite)
    if leak and not _LEAKS.search(x.original):
        return f"the rewrite talks about the rewriting or the prompt: {leak.group(0)!r}"
    return safety.meta_reason(x)


def rule_length_ratio(x: FilterInput) -> str | None:
    o, r = tokens.count(x.original), tokens.count(x.rewrite)
    if r < MIN_LENGTH_RATIO * o:
        return f"rewrite has {r} tokens, under {MIN_LENGTH_RATIO}x the original's {o}"
    return None


def rule_code_mismatch(x: FilterInput) -> str | None:
    o, r = has_code(x.original), has_code(x.rewrite)
    if (
        r
        and not o
        and all(strip_comments(b) in strip_comments(x.original) for b in code_blocks(x.rewrite))
    ):
        return None  # the original's own command or snippet, now fenced
    if o != r:
        return (
            "the original contains code but the rewrite does not"
            if o
            else ("the rewrite adds code the original did not have")
        )
    return None


def rule_short_answer(x: FilterInput) -> str | None:
    o = x.original.strip()
    long = word_count(o) > SHORT_ANSWER_WORDS and stated_answer(o) is None
    said = chosen_letters(o) if long else set()
    if len(said) == 1 and (other := chosen_letters(x.rewrite) - said):
        # "C. Nitrogen makes up 78% …" opens with its option, whatever the type's answer
        return f"the rewrite chooses {', '.join(sorted(other))}; the original chose {min(said)}"
    if has_explicit_final_answer(o):
        return None  # `#### N` / `\boxed{}`: final_answer_lost compares it as a number
    if x.numeric and NUMBER.search(o):
        return None  # "3 + 4 = 7": the result matters, not the operands (final_answer_lost)
    if word_count(o) <= SHORT_ANSWER_WORDS:
        answer, what = o, "original short answer"
    elif (stated := stated_answer(o)) is not None and word_count(stated) <= SHORT_ANSWER_WORDS:
        answer, what = stated, "original's stated answer"
    else:
        return _brief_answer_lost(x)
    terms = answer_not_subject(answer_terms(answer), x.instruction)
    letters = {t.upper() for t in terms if len(t) == 1 and t.isalpha()}
    other = chosen_letters(x.rewrite) - letters
    if len(letters) == 1 and other:
        # The letter may still appear ("A is tempting, but..."): what counts is the choice.
        return f"the rewrite chooses {', '.join(sorted(other))}; the {what} is {answer!r}"
    missing = [t for t in terms if not has_term(t, x.rewrite)]
    if missing:
        return f"the {what} {answer!r} is not in the rewrite (missing {', '.join(missing)})"
    return order_lost(terms, x.rewrite, x.instruction)


def _brief_answer_lost(x: FilterInput) -> str | None:
    """A brief original keeps the names and numbers of its first sentence."""
    if word_count(x.original) > BRIEF_ANSWER_WORDS:
        return None
    terms = brief_terms(x.original, x.instruction)
    missing = [t for t in terms if not has_term(t, x.rewrite)]
    if missing:
        return f"the original's answer names {', '.join(missing)}, which the rewrite does not"
    return None


def _marked_answer(original: str, rewrite: str, marked: bool) -> str | None:
    """The `#### N` / `\boxed{N}` answer of the original, checked in the rewrite: the same
    marker when `marked`, else the rewrite's final answer in any wording."""
    if m := GSM8K.findall(original):
        want, shown = m[-1].strip(), f"'#### {m[-1].strip()}'"
        got = [g.strip() for g in GSM8K.findall(rewrite)[-1:]]
    elif b := boxed_contents(original):
        want, shown = b[-1], f"\\boxed{{{b[-1]}}}"
        got = boxed_contents(rewrite)[-1:]
    else:
        return None
    if not got and not marked:
        got = final_answers(rewrite)[:3]  # the stated answer or the last line's numbers
    # The last `####` (or `\boxed{}`) is the one graders read.
    if not (got and same_number(want, got[0])) and not (
        not marked and any(same_number(want, g) for g in got)
    ):
        return f"the original final answer {shown} is lost"
    return None


def _working_lost(original: str, rewrite: str) -> str | None:
    """A worked answer's numbers ("16 - 3 - 4 = 9") must mostly survive: a rewrite that
    keeps only the result lost the working."""
    work = digit_numbers(GSM8K.sub("", original))
    kept = work & number_values(rewrite)
    if len(work) >= 3 and len(kept) * 2 < len(work):
        missing = ", ".join(str(v) for v in sorted(work - kept)[:4])
        return f"the rewrite drops the original's working (numbers {missing} are gone)"
    return None


def rule_final_answer(x: FilterInput) -> str | None:
    if has_explicit_final_answer(x.original):
        return _marked_answer(
            x.original, x.rewrite, x.preset in MARKED_ANSWER_PRESETS
        ) or _working_lost(x.original, x.rewrite)
    if x.numeric:
        last = last_number(x.original)
        said = last_number(x.rewrite)
        if last is not None and not (said is not None and same_number(last, said)):
            # A closing line such as "That gives 7 in total." still states the answer.
            tail = x.rewrite.strip().split("\n")[-1]
            if not any(same_number(last, n) for n in NUMBER.findall(tail)):
                return f"the original's last number {last} is not the rewrite's final answer"
    return None


def rule_planning(x: FilterInput) -> str | None:
    if x.task_type == "planning" and not _PLAN_WORDS.search(x.instruction):
        return "task type is planning but the request does not ask for a plan"
    return None


def rule_default_type(x: FilterInput) -> str | None:
    if x.task_type == "default":
        return "task type is default: no format to follow"
    return None


def rule_math_without_numbers(x: FilterInput) -> str | None:
    if x.task_type == "math_puzzles" and not _QUESTION_NUMBER.search(x.instruction):
        return "task type is math_puzzles but the request has no number"
    return None


def rule_exam_short_original(x: FilterInput) -> str | None:
    # ReAlign's exam rule: an exam answer of at most 5 characters ("B", "True", "42") is
    # the answer a grader reads; a rewrite buries it, so the original stays.
    if x.task_type == "exam_problem_solving_tutor" and len(x.original.strip()) <= 5:
        return f"exam answer {x.original.strip()!r} has at most 5 characters: kept as it is"
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
    "truncated": safety.rule_truncated,
    "language_switch": safety.rule_language,
    "verdict_lost": safety.rule_verdict,
    "list_items_lost": safety.rule_list_items,
    "code_changed": safety.rule_code_changed,
    "off_topic": safety.rule_off_topic,
    "invented_content": safety.rule_invented,
    "exam_short_original": rule_exam_short_original,
}

_FIRST = ("unchanged", "meta_text")
# Run by every preset: the first two right after `_FIRST` (a cut or translated rewrite fails
# the other rules too, for a less telling reason), the rest after the preset's own rules
# (those it already runs keep their place).
SAFETY_RULES = (
    "truncated",
    "language_switch",
    "verdict_lost",
    "final_answer_lost",
    "short_answer_lost",
    "list_items_lost",
    "code_changed",
    "off_topic",
    "invented_content",
)
_EARLY = SAFETY_RULES[:2]


def with_safety(*rules: str) -> tuple[str, ...]:
    """`unchanged`, `meta_text`, `truncated`, `language_switch`, the preset's own `rules`,
    then the other safety rules it lacks."""
    return (*_FIRST, *_EARLY, *rules, *(r for r in SAFETY_RULES[2:] if r not in rules))


PRESETS: dict[str, tuple[str, ...]] = {
    "default": with_safety(
        "planning_not_requested",
        "length_ratio",
        "code_mismatch",
        "final_answer_lost",
        "short_answer_lost",
    ),
    # ReAlign: a one-character answer must stay a standalone token (case-sensitive), True/False
    # answers pass; code must not appear or vanish; the rewrite must keep half the length.
    "open-platypus": with_safety("short_answer_lost", "code_mismatch", "length_ratio"),
    # ReAlign: no rewrite of the `default` type; `planning` only when a plan was asked for.
    "no-robots": with_safety(
        "default_type", "planning_not_requested", "code_mismatch", "length_ratio"
    ),
    "gsm8k": with_safety("final_answer_lost", "length_ratio"),
    # ReAlign: math_puzzles only when the question has a number.
    "math": with_safety("math_without_numbers", "final_answer_lost", "length_ratio"),
    # ReAlign's Alpaca selection (code, then length) and its exam rule for that type.
    "alpaca": with_safety("exam_short_original", "code_mismatch", "length_ratio"),
}
DEFAULT_PRESET = "default"


def decide(
    instruction: str,
    original: str,
    rewrite: str,
    task_type: str,
    preset: str = DEFAULT_PRESET,
    pack: CriteriaPack | None = None,
    *,
    evidence: Sequence[str] = (),
    context: str = "",
    finish_reason: str | None = None,
) -> FilterDecision:
    """The first rule of `preset` that fires, else `passed`. Whether the answer is a number
    comes from the task type's criterion in `pack` (else in the built-in pack). `evidence`
    (search snippets) and `context` (earlier turns) are texts the rewrite may take facts from;
    `finish_reason` is the model's own for the rewrite."""
    if preset not in PRESETS:
        raise ValueError(f"unknown filter preset {preset!r}: use {', '.join(PRESETS)}")
    names = PRESETS[preset]
    x = FilterInput(
        instruction=instruction,
        original=original,
        rewrite=rewrite,
        task_type=task_type,
        numeric=numeric_answer(task_type, pack),
        evidence=tuple(evidence),
        context=context,
        finish_reason=finish_reason,
        preset=preset,
    )
    for name in names:
        reason = RULES[name](x)
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
