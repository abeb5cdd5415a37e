"""Evidence cleaning (`clean_evidence`), the last step of the retrieval stage.

HTML entities are decoded, a leading date ("Mar 3, 2021 —", "3 days ago ·") and Google's
"Missing: … | Must include: …" tail are stripped; then a snippet is dropped when it is empty or
under 3 words, only a date, a "no results" notice, a cookie / JavaScript / sign-in notice,
navigation text (breadcrumbs, menus), or a duplicate of a kept snippet (same or contained text
after lowercasing and removing punctuation). The search engine's own answer (`Evidence.answer`:
Serper's answer box and knowledge graph) is kept however short — "2013", "Kyrsten Sinema", "the
1830s" are the answer — and a date is kept there too; answers are compared for duplicates only
with each other and only for equal text. Kept snippets are capped together at `max_tokens`
(title + snippet, cl100k tokens); the one that crosses the cap is truncated when at least 20
tokens remain, otherwise dropped.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field

from realign import tokens
from realign.records import Evidence

DEFAULT_MAX_EVIDENCE_TOKENS = 600
MIN_SNIPPET_WORDS = 3
MIN_TRUNCATED_TOKENS = 20

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_DATE = (
    rf"(?:{_MONTH}\s+\d{{1,2}},?\s+\d{{4}}"
    rf"|\d{{1,2}}\s+{_MONTH},?\s+\d{{4}}"
    rf"|{_MONTH}\s+\d{{4}}"
    r"|\d{4}-\d{2}-\d{2}"
    r"|\d{1,2}/\d{1,2}/\d{2,4}"
    r"|\d+\s+(?:seconds?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?)\s+ago)"
)
_LEADING_DATE = re.compile(rf"^\s*{_DATE}\s*(?:—|–|-|·|\.\.\.|…|:)\s*", re.IGNORECASE)
_ONLY_DATE = re.compile(rf"^\W*(?:(?:updated|published|posted)\s*:?\s*)?{_DATE}\W*$", re.IGNORECASE)
_MISSING_TAIL = re.compile(r"\s*(?:\.\.\.|…)?\s*Missing:.*$", re.IGNORECASE | re.DOTALL)
_NO_RESULTS = re.compile(
    r"^\W*(?:no\s+results?(?:\s+found)?|your search .* did not match any documents"
    r"|no\s+information\s+is\s+available\s+for\s+this\s+page)",
    re.IGNORECASE,
)
_NOTICE = re.compile(
    r"(?:we\s+use\s+cookies|this\s+(?:site|website)\s+uses\s+cookies|accept\s+(?:all\s+)?cookies"
    r"|cookie\s+(?:policy|settings|preferences)"
    r"|enable\s+javascript|javascript\s+is\s+(?:disabled|required|not\s+enabled)"
    r"|your\s+browser\s+does\s+not\s+support|please\s+turn\s+on\s+javascript"
    r"|sign\s+in\s+to\s+(?:continue|view)|log\s+in\s+to\s+(?:continue|view)"
    r"|^\W*access\s+denied|are\s+you\s+a\s+robot|verify\s+you\s+are\s+(?:a\s+)?human)",
    re.IGNORECASE,
)
_NAV_START = re.compile(
    r"^\W*(?:skip\s+to\s+(?:main\s+)?(?:content|navigation)|jump\s+to\s+(?:navigation|search)"
    r"|main\s+menu|toggle\s+navigation)",
    re.IGNORECASE,
)
_NAV_SEPARATORS = re.compile(r"\s[|›»>·/]\s")


def _is_navigation(text: str) -> bool:
    """Menus and breadcrumbs: several separator-joined segments of one or two words each."""
    if _NAV_START.search(text):
        return True
    parts = [p for p in _NAV_SEPARATORS.split(text) if p.strip()]
    if len(parts) < 4:
        return False
    short = sum(1 for p in parts if len(p.split()) <= 2)
    return short / len(parts) >= 0.75


def normalize(text: str) -> str:
    text = re.sub(r"['’]", "", text.lower())  # "Moon's" and "moons" are the same words
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def strip_snippet(text: str) -> str:
    """Decode entities, collapse whitespace, strip a leading date and Google's Missing: tail."""
    text = " ".join(html.unescape(text).split())
    text = _LEADING_DATE.sub("", text)
    text = _MISSING_TAIL.sub("", text)
    return text.strip(" -—–·|")


def drop_reason(text: str, *, answer: bool = False) -> str | None:
    """Why a stripped snippet is unusable, or None when it is kept (duplicates aside).

    An `answer` (answer box, knowledge graph) is the answer itself: a year or a name is enough.
    """
    if not text or (not answer and len(text.split()) < MIN_SNIPPET_WORDS):
        return "empty"
    if not answer and _ONLY_DATE.match(text):
        return "date only"
    if _NO_RESULTS.search(text):
        return "no results"
    if _NOTICE.search(text):
        return "notice"
    if _is_navigation(text):
        return "navigation"
    return None


@dataclass
class CleanReport:
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """e.g. '5 results: 3 duplicate, 2 navigation'."""
        total = self.kept + sum(self.dropped.values())
        parts = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()))
        return f"{total} result{'s' if total != 1 else ''}" + (f": {parts}" if parts else "")


def clean_evidence(
    items: list[Evidence], max_tokens: int = DEFAULT_MAX_EVIDENCE_TOKENS
) -> tuple[list[Evidence], CleanReport]:
    """Cleaned, de-duplicated evidence within the token cap (rules in the module docstring)."""
    report = CleanReport()
    kept: list[Evidence] = []
    seen: list[str] = []
    answers: set[str] = set()
    budget = max_tokens
    for item in items:
        snippet = strip_snippet(item.snippet)
        reason = drop_reason(snippet, answer=item.answer)
        norm = normalize(snippet)
        # A short answer ("2013") is inside many snippets: compare answers only with answers,
        # and only for equality, so neither drops the other.
        if reason is None and (
            norm in answers if item.answer else any(norm in s or s in norm for s in seen)
        ):
            reason = "duplicate"
        if reason is None and budget <= 0:
            reason = "over token cap"
        if reason is None:
            title = " ".join(html.unescape(item.title).split())
            cost = tokens.count(title) + tokens.count(snippet)
            if cost > budget:
                room = budget - tokens.count(title)
                if room < MIN_TRUNCATED_TOKENS:
                    reason = "over token cap"
                else:
                    snippet = tokens.truncate(snippet, room).rstrip() + " …"
                    cost = budget
        if reason is not None:
            report.dropped[reason] += 1
            continue
        if item.answer:
            answers.add(norm)
        else:
            seen.append(norm)
        budget -= cost
        kept.append(item.model_copy(update={"snippet": snippet, "title": title}))
    report.kept = len(kept)
    return kept, report
