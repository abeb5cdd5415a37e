"""The search query of a unit (`build_query`), the first step of the retrieval stage.

Deterministic, from the instruction the unit answers: fenced code blocks and URLs are removed,
whitespace is collapsed, and a leading boilerplate phrase such as "Answer the following
question:", "Question:", "Q:", "Please tell me" or "Can you explain" is stripped. An
instruction of at most 32 words is then the query as is (ReAlign searched with the whole
instruction). A longer one is focused on its first question: the first sentence ending in "?"
with at least 3 words (prefixes stripped again), preceded by the sentence before it when the
question has fewer than 7 words ("What is wrong?") and both fit in 32 words; so that the
question does not lose what it is about ("Who was the first emperor?" after a paragraph on the
Roman Empire), the names and years of the whole instruction it lacks (`key_terms`: "Roman
Empire", "1830s") follow it, at most 10 words. A later turn of a conversation ("Who was its
first emperor?") is searched the same way with the names of the earlier requests, newest first.
Finally the query is cut to 32 words (Google ignores words after the 32nd) and 2048 characters
(the Custom Search limit on `q`).
"""

from __future__ import annotations

import re

from realign.records import Record
from realign.stages.retrieve_clean import MIN_SNIPPET_WORDS, normalize

MAX_QUERY_WORDS = 32
MAX_QUERY_CHARS = 2048
SHORT_QUESTION_WORDS = 7  # a shorter question is given the sentence before it as context
MAX_EXTRA_WORDS = 10  # words of names from around the question or from earlier turns

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
    have = set(normalize(query).split())
    budget = min(MAX_EXTRA_WORDS, MAX_QUERY_WORDS - len(query.split()))
    added: list[str] = []
    for term in terms:
        words = normalize(term).split()
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
