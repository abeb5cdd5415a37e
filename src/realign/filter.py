"""Stage 4: rule-based filter, no LLM. Keeps the original whenever the rewrite might be worse.

Rules run in order; the first that fires decides. Each has a name recorded with the decision.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from realign import tokens
from realign.metrics import GSM8K, NUMBER, boxed_contents, normalize_number
from realign.records import FilterDecision

MIN_LENGTH_RATIO = 0.5
MATH_TYPES = frozenset({"math_puzzles", "exam_problem_solving_tutor"})

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
_SHORT_ANSWERS = {"true", "false", "yes", "no"}


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


def standalone(token: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(token)}(?![\w])", text, re.IGNORECASE) is not None


# Each rule: (name, check(instruction, original, rewrite, task_type) -> reason or None).
Rule = Callable[[str, str, str, str], str | None]


def rule_length_ratio(instruction: str, original: str, rewrite: str, task_type: str) -> str | None:
    o, r = tokens.count(original), tokens.count(rewrite)
    if r < MIN_LENGTH_RATIO * o:
        return f"rewrite has {r} tokens, under {MIN_LENGTH_RATIO}x the original's {o}"
    return None


def rule_code_mismatch(instruction: str, original: str, rewrite: str, task_type: str) -> str | None:
    o, r = has_code(original), has_code(rewrite)
    if o != r:
        return (
            "the original contains code but the rewrite does not"
            if o
            else ("the rewrite adds code the original did not have")
        )
    return None


def rule_short_answer(instruction: str, original: str, rewrite: str, task_type: str) -> str | None:
    o = original.strip().rstrip(".")
    if (len(o) == 1 or o.lower() in _SHORT_ANSWERS) and not standalone(o, rewrite):
        return f"the original short answer {o!r} is no longer in the rewrite"
    return None


def rule_final_answer(instruction: str, original: str, rewrite: str, task_type: str) -> str | None:
    m = GSM8K.search(original)
    if m:
        if not any(same_number(m.group(1), x) for x in GSM8K.findall(rewrite)):
            return f"the original final answer '#### {m.group(1).strip()}' is lost"
        return None
    ob = boxed_contents(original)
    if ob:
        if not any(same_number(ob[-1], x) for x in boxed_contents(rewrite)):
            return f"the original final answer \\boxed{{{ob[-1]}}} is lost"
        return None
    if task_type in MATH_TYPES:
        want = last_number(original)
        got = last_number(rewrite)
        if want is not None and not (got is not None and same_number(want, got)):
            # A closing line such as "That gives 7 in total." still states the answer.
            tail = rewrite.strip().split("\n")[-1]
            if not any(same_number(want, x) for x in NUMBER.findall(tail)):
                return f"the original's last number {want} is not the rewrite's final answer"
    return None


def rule_planning(instruction: str, original: str, rewrite: str, task_type: str) -> str | None:
    if task_type == "planning" and not _PLAN_WORDS.search(instruction):
        return "task type is planning but the request does not ask for a plan"
    return None


RULES: list[tuple[str, Rule]] = [
    ("planning_not_requested", rule_planning),
    ("length_ratio", rule_length_ratio),
    ("code_mismatch", rule_code_mismatch),
    ("short_answer_lost", rule_short_answer),
    ("final_answer_lost", rule_final_answer),
]


def decide(instruction: str, original: str, rewrite: str, task_type: str) -> FilterDecision:
    for name, rule in RULES:
        reason = rule(instruction, original, rewrite, task_type)
        if reason is not None:
            return FilterDecision(keep_original=True, rule=name, reason=reason)
    return FilterDecision(keep_original=False, rule="passed", reason="all rules passed")
