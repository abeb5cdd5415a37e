"""Retrieval stage: evidence for knowledge-heavy units, from a search provider.

Three pure steps plus one cached call:

1. **Query** (`build_query`) — deterministic, from the instruction the unit answers:
   fenced code blocks and URLs are removed, whitespace is collapsed, and a leading boilerplate
   phrase such as "Answer the following question:", "Question:", "Q:", "Please tell me" or
   "Can you explain" is stripped. An instruction of at most 32 words is then the query as is
   (ReAlign searched with the whole instruction). A longer one is focused on its first
   question: the first sentence ending in "?" with at least 3 words (prefixes stripped
   again), preceded by the sentence before it when the question has fewer than 7 words
   ("What is wrong?") and both fit in 32 words; so that the question does not lose what it
   is about ("Who was the first emperor?" after a paragraph on the Roman Empire), the names
   and years of the whole instruction it lacks (`key_terms`: "Roman Empire", "1830s") follow
   it, at most 10 words. A later turn of a conversation ("Who was its first emperor?") is
   searched the same way with the names of the earlier requests, newest first. Finally the
   query is cut to 32 words (Google ignores words after the 32nd) and 2048 characters (the
   Custom Search limit on `q`).
2. **Search** — `provider.search(query, k)` through `Engine.call("search", key, ...)`, whose
   key is the hash of (provider id, query, k): every raw answer is cached in the local store,
   so a rerun never pays twice. Raw answers are cached, cleaning happens after, so changing
   the cleaning rules needs no new searches.
3. **Cleaning** (`clean_evidence`) — HTML entities are decoded, a leading date
   ("Mar 3, 2021 —", "3 days ago ·") and Google's "Missing: … | Must include: …" tail are
   stripped; then a snippet is dropped when it is empty or under 3 words, only a date,
   a "no results" notice, a cookie / JavaScript / sign-in notice, navigation text
   (breadcrumbs, menus), or a duplicate of a kept snippet (same or contained text after
   lowercasing and removing punctuation). The search engine's own answer (`Evidence.answer`:
   Serper's answer box and knowledge graph) is kept however short — "2013", "Kyrsten Sinema",
   "the 1830s" are the answer — and a date is kept there too; answers are compared for
   duplicates only with each other and only for equal text. Kept snippets are capped together at `max_tokens`
   (title + snippet, cl100k tokens); the one that crosses the cap is truncated when at least
   20 tokens remain, otherwise dropped.

Failures never stop the run. A quota or auth error (HTTP 429/403 from Google, for instance)
disables the provider for the rest of the run with one message; five failures in a row of
any other kind do the same. The units concerned continue without evidence, and the reason is
recorded in `UnitMeta.evidence_note`.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from realign import tokens
from realign.hashing import digest
from realign.records import Evidence, Record, UnitMeta, ensure_units, input_task_type
from realign.search.base import SearchError, SearchProvider

if TYPE_CHECKING:
    from realign.criteria import CriteriaPack
    from realign.llm.engine import Engine

log = logging.getLogger(__name__)

DEFAULT_K = 5
DEFAULT_MAX_EVIDENCE_TOKENS = 600
MAX_QUERY_WORDS = 32
MAX_QUERY_CHARS = 2048
SHORT_QUESTION_WORDS = 7  # a shorter question is given the sentence before it as context
MAX_EXTRA_WORDS = 10  # words of names from around the question or from earlier turns
MIN_SNIPPET_WORDS = 3
MIN_TRUNCATED_TOKENS = 20
MAX_CONSECUTIVE_FAILURES = 5

NOTE_NO_EVIDENCE = "no usable evidence; rewritten without evidence"

# ---------------------------------------------------------------- query building

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_URL = re.compile(r"https?://\S+")
_BOILERPLATE_PREFIX = re.compile(
    r"^\s*(?:"
    r"(?:please\s+)?answer\s+(?:the\s+|this\s+)?(?:following\s+)?(?:question|query)s?"
    r"(?:\s+(?:below|briefly|in\s+detail))?\s*[:.\-]?"
    r"|(?:question|query|q|instruction|input|task)\s*[:.\-]"
    r"|(?:please\s+)?(?:can|could|would)\s+you\s+(?:please\s+)?(?:tell\s+me|explain|answer)"
    r"(?=\s)"
    r"|please\s+(?:tell\s+me|explain)(?=\s)"
    r"|i\s+(?:want|would\s+like)\s+to\s+know(?=\s)"
    r")\s*",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _strip_prefixes(text: str) -> str:
    prev = None
    while prev != text:  # "Question: Can you tell me ..." has two prefixes
        prev, text = text, _BOILERPLATE_PREFIX.sub("", text, count=1).strip()
    return text


def _focus(text: str) -> str | None:
    """The question of a long instruction, with the sentence before it when it is short."""
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    for i, sent in enumerate(sentences):
        question = _strip_prefixes(sent)
        if question.endswith("?") and len(question.split()) >= MIN_SNIPPET_WORDS:
            if len(question.split()) < SHORT_QUESTION_WORDS and i > 0:
                with_context = f"{sentences[i - 1]} {question}"
                if len(with_context.split()) <= MAX_QUERY_WORDS:
                    return with_context
            return question
    return None


# Capitalised words that name nothing: they start sentences and questions.
_NOT_NAMES_TEXT = """a an the this that these those it its i i'm i've i'd me my we our you your he
    she his her they them their there here what who whom whose which when where why how is are was
    were be been do does did can could would should will shall may might must have has had
    and or but if then so as at by for from in into of on to with about after before also
    please thanks thank hi hello dear yes no not ok okay q answer question questions
    passage context text input output instruction task note bc ad"""
_NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())
_TERM_NUMBER = re.compile(r"\d{3,4}s?")  # years and decades: "1830s", "2013"


def key_terms(text: str) -> list[str]:
    """Names and years in `text`, in order, without repeats: "the Roman Empire" → "Roman Empire".

    A name is a run of capitalised words that are not sentence starters like "The" or "What";
    a single capitalised word that only starts a sentence ("Summarize", "Octavian") is not
    taken, since imperative verbs look the same.
    """
    out: list[str] = []
    run: list[str] = []
    run_initial = False

    def flush() -> None:
        nonlocal run_initial
        if run and not (len(run) == 1 and run_initial and not _TERM_NUMBER.fullmatch(run[0])):
            term = " ".join(run)
            if term.lower() not in (t.lower() for t in out):
                out.append(term)
        run.clear()
        run_initial = False

    words = text.split()
    for i, word in enumerate(words):
        core = word.strip("\"'“”‘’()[]{},.;:!?*_")
        initial = i == 0 or words[i - 1][-1:] in ".!?:"
        is_name = core[:1].isupper() and core.lower() not in _NOT_NAMES
        if is_name or _TERM_NUMBER.fullmatch(core):
            if not run:
                run_initial = initial
            run.append(core)
        else:
            flush()
        if word[-1:] in ",.;:!?)":
            flush()  # a name does not run across punctuation
    flush()
    return out


def _with_terms(query: str, terms: list[str]) -> str:
    """`query` followed by the terms it lacks, within MAX_EXTRA_WORDS and MAX_QUERY_WORDS."""
    have = set(_normalize(query).split())
    budget = min(MAX_EXTRA_WORDS, MAX_QUERY_WORDS - len(query.split()))
    added: list[str] = []
    for term in terms:
        words = _normalize(term).split()
        if not words or set(words) <= have or len(words) > budget:
            continue
        added.append(term)
        have.update(words)
        budget -= len(words)
    return " ".join([query, *added])


def build_query(instruction: str, context: str = "") -> str:
    """The search query for an instruction, by the rule in the module docstring.

    `context` is the earlier requests of the conversation, newest first (`request_context`):
    a later turn ("Who was its first emperor?") is searched with the names they mention.
    """
    text = _URL.sub(" ", _CODE_BLOCK.sub(" ", instruction))
    text = _strip_prefixes(" ".join(text.split()))
    terms: list[str] = []
    if len(text.split()) > MAX_QUERY_WORDS:
        question = _focus(text)
        if question is not None:
            # The question alone can lose what it is about ("Who was the first emperor?"
            # after a paragraph on the Roman Empire): the names around it come along.
            terms = key_terms(text)
            text = question
    words = text.split()
    if len(words) > MAX_QUERY_WORDS:
        text = " ".join(words[:MAX_QUERY_WORDS])
    if context.strip():
        ctx = _URL.sub(" ", _CODE_BLOCK.sub(" ", context))
        terms += key_terms(" ".join(ctx.split()))
    if terms and text:
        text = _with_terms(text, terms)
    if len(text) > MAX_QUERY_CHARS:
        text = text[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]
    return text


def request_context(record: Record, turn: int) -> str:
    """The user requests before the one assistant turn `turn` answers, newest first."""
    first = max((i for i in range(turn) if record.turns[i].role == "user"), default=0)
    earlier = [t.content for t in record.turns[:first] if t.role == "user"]
    return "\n".join(reversed(earlier))


# ---------------------------------------------------------------- cleaning

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


def _normalize(text: str) -> str:
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
        norm = _normalize(snippet)
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


# ---------------------------------------------------------------- the retriever


class RetrievalResult(BaseModel):
    query: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    note: str = ""


@dataclass
class RetrieverStats:
    searches: int = 0  # queries answered (cache hits included)
    with_evidence: int = 0
    empty: int = 0
    errors: int = 0
    skipped_disabled: int = 0
    error_messages: Counter[str] = field(default_factory=Counter)


class _ProviderDisabled(Exception):
    """A queued query found the provider disabled when its turn came."""


def _describe_error(e: SearchError) -> str:
    what = {"quota": "quota exceeded", "auth": "authentication failed"}.get(e.kind, "failed")
    return f"{what} (HTTP {e.status})" if e.status else what


class Retriever:
    """Evidence for instructions from one provider, cached through the engine.

    `engine` may be None (no cache: every query is sent), which tests and one-off scripts use.
    `on_message` receives the one-time "provider disabled" message (default: log warning).
    """

    def __init__(
        self,
        provider: SearchProvider | None,
        engine: Engine | None = None,
        *,
        k: int = DEFAULT_K,
        max_tokens: int = DEFAULT_MAX_EVIDENCE_TOKENS,
        retries: int = 2,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.engine = engine
        self.k = k
        self.max_tokens = max_tokens
        self.retries = retries
        self.on_message = on_message or log.warning
        self.disabled: str | None = None  # the reason, once the provider is switched off
        self.stats = RetrieverStats()
        self._consecutive_failures = 0

    def _disable(self, reason: str, detail: str) -> None:
        if self.disabled is None and self.provider is not None:
            self.disabled = reason
            self.on_message(
                f"{self.provider.name} search disabled for the rest of this run: {detail}. "
                "Units that still need evidence continue without it (see evidence_note)."
            )

    def _cache_key(self, query: str, k: int) -> str:
        assert self.provider is not None
        return digest([self.provider.provider_id, query, k])

    async def _raw_search(self, query: str, k: int) -> list[Evidence]:
        provider = self.provider
        assert provider is not None

        async def fetch() -> str:
            # Checked again here, once the engine gives this call a slot: queries queued
            # before a quota error must not be sent after it.
            if self.disabled:
                raise _ProviderDisabled
            for attempt in range(self.retries + 1):
                try:
                    found = await provider.search(query, k)
                    break
                except SearchError as e:
                    transient = e.kind == "other" and (e.status is None or e.status >= 500)
                    if not transient or attempt == self.retries:
                        raise
                    await asyncio.sleep(0.5 * 2**attempt)
            return json.dumps([e.model_dump() for e in found], ensure_ascii=False)

        if self.engine is None:
            text = await fetch()
        else:
            text = await self.engine.call("search", self._cache_key(query, k), fetch)
        return [Evidence.model_validate(x) for x in json.loads(text)]

    async def evidence_for(
        self,
        instruction: str,
        k: int | None = None,
        max_tokens: int | None = None,
        *,
        context: str = "",
    ) -> RetrievalResult:
        """Cleaned evidence for one instruction; never raises for search failures.

        `context`: the conversation's earlier requests, newest first (`request_context`).
        """
        k = self.k if k is None else k
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        query = build_query(instruction, context)
        if self.provider is None:
            return RetrievalResult(query=None, note="retrieval: none (no search provider)")
        if not query:
            return RetrievalResult(query=None, note="no query: the instruction is empty")
        if self.disabled:
            self.stats.skipped_disabled += 1
            return RetrievalResult(query=query, note=f"search provider disabled: {self.disabled}")
        try:
            raw = await self._raw_search(query, k)
        except _ProviderDisabled:
            self.stats.skipped_disabled += 1
            return RetrievalResult(query=query, note=f"search provider disabled: {self.disabled}")
        except SearchError as e:
            self.stats.errors += 1
            self.stats.error_messages[str(e)] += 1
            if e.kind in ("quota", "auth"):
                self._disable(_describe_error(e), f"{_describe_error(e)}: {e.message}")
            else:
                self._consecutive_failures += 1
                if self._consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    self._disable(
                        f"{self._consecutive_failures} failures in a row",
                        f"{self._consecutive_failures} failures in a row, the last: {e}",
                    )
            if self.disabled:
                return RetrievalResult(
                    query=query, note=f"search provider disabled: {self.disabled}"
                )
            return RetrievalResult(
                query=query, note=f"search failed: {e.message}; rewritten without evidence"
            )
        self._consecutive_failures = 0
        self.stats.searches += 1
        evidence, report = clean_evidence(raw, max_tokens)
        if not evidence:
            self.stats.empty += 1
            return RetrievalResult(query=query, note=f"{NOTE_NO_EVIDENCE} ({report.describe()})")
        self.stats.with_evidence += 1
        return RetrievalResult(query=query, evidence=evidence)


# ---------------------------------------------------------------- records


def unit_task_type(record: Record, unit: UnitMeta) -> str | None:
    """`unit.task_type`, else the input's category (then recorded on the unit as from input)."""
    if unit.task_type is None:
        given = input_task_type(record, unit.turn)
        if given:
            unit.task_type, unit.task_source = given, "input"
            if record.meta.task_type is None and unit is record.meta.units[0]:
                record.meta.task_type = given
    return unit.task_type


async def attach_evidence(
    record: Record,
    pack: CriteriaPack,
    retriever: Retriever,
    k: int | None = None,
    max_tokens: int | None = None,
    *,
    all_types: bool = False,
) -> Record:
    """Set `query`, `evidence` and `evidence_note` on every unit of `record` (in place).

    A unit gets evidence when its task type's criterion says `retrieval: true` (or always with
    `all_types`); otherwise its note says why not. Search failures become notes, never errors.
    """

    async def one(unit: UnitMeta) -> None:
        task = unit_task_type(record, unit)
        if not all_types:
            if task is None:
                unit.evidence_note = "no task type: run `realign classify` first or use --all-types"
                return
            if task not in pack:
                unit.evidence_note = f"task type '{task}' is not in criteria pack '{pack.name}'"
                return
            if not pack[task].retrieval:
                unit.query, unit.evidence = None, []
                unit.evidence_note = f"retrieval: no for {task}"
                return
        res = await retriever.evidence_for(
            record.instruction_for(unit.turn),
            k,
            max_tokens,
            context=request_context(record, unit.turn),
        )
        unit.query, unit.evidence, unit.evidence_note = res.query, res.evidence, res.note

    await asyncio.gather(*(one(u) for u in ensure_units(record)))
    return record
