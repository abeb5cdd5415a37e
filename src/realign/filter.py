"""Stage 4: rule-based filter, no LLM. Keeps the original whenever the rewrite might be worse.

Rules run in order; the first that fires decides. Each has a name recorded with the decision.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from realign import tokens
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
_GSM8K = re.compile(r"####\s*([^\n]+)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_PLAN_WORDS = re.compile(
    r"\b(plan|planning|schedule|itinerary|roadmap|timeline|agenda|strategy|steps?|"
    r"organi[sz]e|prepare|outline|routine|program(?:me)?|calendar|checklist)\b",
    re.IGNORECASE,
)
_SHORT_ANSWERS = {"true", "false", "yes", "no"}


def has_code(text: str) -> bool:
    return bool(_FENCE.search(text) or _FUNC_DEF.search(text))


def boxed(text: str) -> list[str]:
    """Contents of every \\boxed{…}, with nested braces."""
    out = []
    for m in re.finditer(r"\\boxed\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1].strip())
    return out


def norm_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        f = float(s)
    except ValueError:
        return s.lower()
    return str(int(f)) if f == int(f) else str(f)


def last_number(text: str) -> str | None:
    nums = _NUMBER.findall(text)
    return norm_number(nums[-1]) if nums else None


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
    m = _GSM8K.search(original)
    if m:
        want = norm_number(m.group(1))
        got = [norm_number(x) for x in _GSM8K.findall(rewrite)]
        if want not in got:
            return f"the original final answer '#### {m.group(1).strip()}' is lost"
        return None
    ob = boxed(original)
    if ob:
        rb = {norm_number(x) for x in boxed(rewrite)}
        if norm_number(ob[-1]) not in rb:
            return f"the original final answer \\boxed{{{ob[-1]}}} is lost"
        return None
    if task_type in MATH_TYPES:
        want = last_number(original)
        if want is not None and last_number(rewrite) != want:
            tail = rewrite.strip().split("\n")[-1]
            if not any(norm_number(x) == want for x in _NUMBER.findall(tail)):
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
