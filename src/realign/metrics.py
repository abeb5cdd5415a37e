"""Reference metrics that need no LLM: answer containment, math final answers, length, format.

They are shown beside the judge's verdicts so a reader can check the judge against something
mechanical: did the response keep the gold answer, did it keep the math result, did it get
longer, did it gain structure.

Answer containment follows open-domain QA evaluation (SQuAD / DPR style normalisation):
lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace; a response
"contains" the answer when any one of the gold answers occurs in it as a whole-token sequence.

A reference's lines are either aliases of one answer ("the 1830s" / "1830s") or the parts of a
list answer ("who are the artists in the traveling wilburys?": five names, each needed).
`reference_lines` tells them apart (rule in its docstring); for a list every line must occur.
"""

from __future__ import annotations

import re
import statistics
import string
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel

from realign import tokens
from realign.criteria import CriteriaPack, numeric_answer

_PUNCT = set(string.punctuation) | set("‘’“”–—…«»¿¡")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Open-domain QA normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def gold_answers(reference: str) -> list[str]:
    """The gold answers of a reference: one per non-empty line (NQ lists aliases that way)."""
    return [line.strip() for line in reference.splitlines() if line.strip()]


def _found(response: str, golds: Iterable[str]) -> list[bool]:
    hay = f" {normalize_answer(response)} "
    # Whole-token match, so the gold "2013" does not count inside "20130".
    return [f" {n} " in hay for g in golds if (n := normalize_answer(g))]


def contains_answer(response: str, golds: Iterable[str], *, every: bool = False) -> bool:
    """True when any normalised gold answer (each one with `every`) occurs in the normalised
    response as whole tokens."""
    found = _found(response, golds)
    return bool(found) and (all(found) if every else any(found))


AnswerLines = Literal["any", "all"]

# The question asks for several things: a count ("5 cities with ..."), "list / name the ...",
# a plural subject ("who are the artists", "what states were", "songs on ..."), or two things
# joined by "and" ("when did it begin and end", "the summer and winter olympics").
_ASKS_SEVERAL = re.compile(
    r"^\s*(?:\d+|two|three|four|five|six|seven|eight|nine|ten|top\s+\d+)\s+\w+s\b"
    r"|\b(?:list|name|enumerate)\s+(?:the|all|some|every)\b"
    r"|\b(?:who|what|which)\s+(?:are|were)\s+(?:the\s+)?\w+s\b"
    r"|\b(?:what|which)\s+\w+s\s+(?:are|were|did|do|have|had)\b"
    r"|^\s*\w+s\s+(?:on|in|of|by|from)\b"
    r"|\w\s+and\s+\w",
    re.IGNORECASE,
)
MANY_LINES = 7  # NQ gives a few aliases per answer; this many distinct lines is a list


def reference_lines(question: str, reference: str) -> AnswerLines:
    """Whether a response needs `any` line of the reference or `all` of them.

    Aliases ("any"): fewer than two lines, or one line contained in another ("Karl Marx." /
    "Karl Marx", "1994" / "in 1994"). A list ("all"): distinct lines and a question that asks
    for several things (`_ASKS_SEVERAL`), or at least MANY_LINES distinct lines ("when did ole
    miss beat alabama?": ten dates).
    """
    lines = [n for line in gold_answers(reference) if (n := normalize_answer(line))]
    if len(set(lines)) < 2:
        return "any"
    for i, a in enumerate(lines):
        if any(i != j and f" {a} " in f" {b} " for j, b in enumerate(lines)):
            return "any"
    if len(lines) >= MANY_LINES or _ASKS_SEVERAL.search(question):
        return "all"
    return "any"


# --- math final answers -------------------------------------------------------------------

GSM8K = re.compile(r"####\s*([^\n]+)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def boxed_contents(text: str) -> list[str]:
    r"""Contents of every `\boxed{...}` (braces balanced, so `\boxed{\frac{1}{2}}` works)."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end() : i - 1])
    return out


def extract_final_answer(text: str) -> str | None:
    r"""The final answer: GSM8K `#### N`, else the last `\boxed{}`, else the last number."""
    m = GSM8K.findall(text)
    if m:
        return m[-1].strip()
    boxed = boxed_contents(text)
    if boxed:
        return boxed[-1].strip()
    nums = NUMBER.findall(text)
    return nums[-1] if nums else None


def has_explicit_final_answer(text: str) -> bool:
    r"""True when the text marks its answer (`####` or `\boxed{}`), as math references do."""
    return bool(GSM8K.search(text) or boxed_contents(text))


def normalize_number(text: str) -> Fraction | None:
    r"""A number from an answer string ('$1,200.50', '3/4', '\frac{3}{4}', '50%'), else None."""
    s = text.strip()
    s = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\d?frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = s.replace("\\$", "").replace("$", "").replace(",", "").replace("\\%", "").replace("%", "")
    s = s.replace("\\!", "").replace(" ", "").rstrip(".")
    m = re.fullmatch(r"\(?(-?\d*\.?\d+)\)?(?:/\(?(-?\d*\.?\d+)\)?)?", s)
    if not m:
        # Units or words around a single number ("18 dollars"): take the number if only one.
        nums = NUMBER.findall(s)
        if len(nums) != 1:
            return None
        return normalize_number(nums[0])
    try:
        value = Fraction(Decimal(m.group(1)))
        if m.group(2) is not None:
            den = Fraction(Decimal(m.group(2)))
            if den == 0:
                return None
            value /= den
    except (InvalidOperation, ValueError):
        return None
    return value


def final_answer_match(response: str, reference: str) -> bool | None:
    """Whether the response's final answer equals the reference's (None: no reference answer)."""
    gold = extract_final_answer(reference)
    if gold is None:
        return None
    got = extract_final_answer(response)
    if got is None:
        return False
    g, r = normalize_number(gold), normalize_number(got)
    if g is not None and r is not None:
        return g == r
    return normalize_answer(gold) == normalize_answer(got)


# --- format features ----------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


class FormatFeatures(BaseModel):
    """Markdown structure of a response, counted outside code blocks."""

    list_items: int = 0
    headings: int = 0
    code_blocks: int = 0
    paragraphs: int = 0
    bold: int = 0


def format_features(text: str) -> FormatFeatures:
    f = FormatFeatures()
    in_code = False
    in_paragraph = False
    prev_text_line = False
    for line in text.splitlines():
        if _FENCE.match(line):
            if not in_code:
                f.code_blocks += 1
            in_code = not in_code
            in_paragraph = prev_text_line = False
            continue
        if in_code:
            continue
        if not line.strip():
            in_paragraph = prev_text_line = False
            continue
        if _HEADING.match(line) or (prev_text_line and _SETEXT.match(line)):
            f.headings += 1
            in_paragraph = prev_text_line = False
            continue
        if _LIST_ITEM.match(line):
            f.list_items += 1
        f.bold += len(_BOLD.findall(line))
        if not in_paragraph:
            f.paragraphs += 1
            in_paragraph = True
        prev_text_line = True
    return f


# --- per-response metrics and their summary -----------------------------------------------


class ResponseMetrics(BaseModel):
    tokens: int
    format: FormatFeatures
    contains_answer: bool | None = None  # None: no reference; a list needs every line
    answer_lines: AnswerLines | None = None  # how the reference's lines count (None: no reference)
    answers_found: int | None = None  # how many of the reference's lines occur in the response
    answer_match: bool | None = None  # None: not a math item or no reference answer


def response_metrics(
    response: str,
    reference: str | None = None,
    task_type: str | None = None,
    question: str = "",
    pack: CriteriaPack | None = None,
) -> ResponseMetrics:
    """Metrics of one response; `question` (the request) tells a list reference from aliases.
    Final answers are compared as numbers when the reference states one (`#### 72`,
    `\\boxed{}`) or the task type's criterion (in `pack`, else built-in) says `answer: numeric`."""
    contains = lines = found = match = None
    if reference is not None and reference.strip():
        lines = reference_lines(question, reference)
        hits = _found(response, gold_answers(reference))
        found = sum(hits)
        contains = bool(hits) and (all(hits) if lines == "all" else any(hits))
        if has_explicit_final_answer(reference) or numeric_answer(task_type, pack):
            match = final_answer_match(response, reference)
    return ResponseMetrics(
        tokens=tokens.count(response),
        format=format_features(response),
        contains_answer=contains,
        answer_lines=lines,
        answers_found=found,
        answer_match=match,
    )


class MetricsSummary(BaseModel):
    n: int
    mean_tokens: float
    median_tokens: float
    with_reference: int  # how many responses had a reference to check against
    containment_rate: float | None  # share of those containing a gold answer
    math_items: int
    answer_match_rate: float | None
    share_with_list: float
    share_with_heading: float
    share_with_code: float
    share_with_bold: float
    mean_paragraphs: float


def _rate(flags: Sequence[bool | None]) -> tuple[int, float | None]:
    known = [f for f in flags if f is not None]
    return len(known), (sum(known) / len(known) if known else None)


def summarize(items: Sequence[ResponseMetrics]) -> MetricsSummary:
    n = len(items)
    toks = [m.tokens for m in items] or [0]
    with_ref, containment = _rate([m.contains_answer for m in items])
    math_n, match = _rate([m.answer_match for m in items])

    def share(pred: list[bool]) -> float:
        return sum(pred) / n if n else 0.0

    return MetricsSummary(
        n=n,
        mean_tokens=statistics.fmean(toks),
        median_tokens=float(statistics.median(toks)),
        with_reference=with_ref,
        containment_rate=containment,
        math_items=math_n,
        answer_match_rate=match,
        share_with_list=share([m.format.list_items > 0 for m in items]),
        share_with_heading=share([m.format.headings > 0 for m in items]),
        share_with_code=share([m.format.code_blocks > 0 for m in items]),
        share_with_bold=share([m.format.bold > 0 for m in items]),
        mean_paragraphs=statistics.fmean([m.format.paragraphs for m in items]) if n else 0.0,
    )


# --- uncertainty --------------------------------------------------------------------------

_BOOTSTRAP_CELLS = 4_000_000  # resamples x items held in memory at once


def bootstrap_ci(
    numer: Sequence[float],
    denom: Sequence[float] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of sum(numer) / sum(denom), resampling items.

    Pass one entry per record (e.g. wins in the record, units in the record) so multi-turn
    records are resampled as a whole. `denom` defaults to 1 per item (a plain mean). The same
    seed gives the same interval. None when there are no items.
    """
    import numpy as np

    num = np.asarray(numer, dtype=float)
    den = np.ones_like(num) if denom is None else np.asarray(denom, dtype=float)
    n = len(num)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_CELLS // n)
    stats = []
    for start in range(0, resamples, block):
        idx = rng.integers(0, n, size=(min(block, resamples - start), n))
        d = den[idx].sum(axis=1)
        stats.append(np.divide(num[idx].sum(axis=1), d, out=np.zeros_like(d), where=d > 0))
    all_stats = np.concatenate(stats)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(all_stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
