"""What the filter rules read (`FilterInput`) and the text measures they share: sentences,
content words, numbers, named entities, code blocks and the language of a text.

Everything here is a pure function of strings; the rules in `filter.py` and `filter_rules.py`
combine these measures into decisions.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from fractions import Fraction

from realign.metrics import NUMBER, normalize_number


@dataclass(frozen=True)
class FilterInput:
    """One rewrite to judge, with everything a rule may compare it against.

    `numeric`: the task type's criterion says `answer: numeric`. `evidence`: the search
    snippets the rewrite was grounded on (their facts may enter the rewrite). `context`: the
    conversation before the instruction. `finish_reason`: the model's own ("length" = cut off). `preset`: the filter preset being run.
    """

    instruction: str
    original: str
    rewrite: str
    task_type: str
    numeric: bool = False
    evidence: tuple[str, ...] = field(default_factory=tuple)
    context: str = ""
    finish_reason: str | None = None
    preset: str = "default"

    @functools.cached_property
    def sources(self) -> str:
        """Every text the rewrite may take facts from."""
        return "\n".join([self.original, self.instruction, self.context, *self.evidence])


def word_list(text: str) -> list[str]:
    """The whitespace-separated words of a literal list written as one string."""
    return text.split()


WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
_FENCE_LINE = re.compile(r"^[ \t]*(?:```|~~~)", re.M)
# Sentence ends: terminal punctuation before a space, or a line break (lists, headings).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]*_]*\s+|\n+")
_LIST_MARKER = re.compile(r"(?m)^[ \t>]*(?:[-*+•]|\d+[.)])[ \t]+")
_MARKUP = re.compile(r"^[\s*_#>`|-]+|^\d+[.)]\s+|[*_`]+$")

# Function words: they carry no content, so overlap is measured without them.
STOPWORDS = frozenset(
    word_list("""a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each either else
    even ever every few for from further had has have having he her here hers herself him himself
    his how however i if in into is it its itself just let like may me might more most much must
    my myself neither no nor not now of off often on once one only or other our ours ourselves
    out over own per perhaps quite rather really same shall she should since so some such than
    that the their theirs them themselves then there these they this those though through thus
    to too under until up upon us very via was we well were what when where whether which while
    who whom whose why will with within without would yet you your yours yourself yourselves
    therefore hence s t d ll re ve m don doesn didn isn aren wasn weren won wouldn shouldn
    couldn can't won't it's that's there's here's let's i'm you're we're they're i've""")
)

_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        word_list(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen twenty"
        )
    )
}
_NUMBER_WORDS |= {
    w: 10 * (i + 3)
    for i, w in enumerate(word_list("thirty forty fifty sixty seventy eighty ninety"))
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}


def strip_code(text: str) -> str:
    """`text` without its fenced code blocks (prose only)."""
    return _FENCED.sub("\n", text)


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks of `text`, in order (an unclosed one too)."""
    return [m.group(2) for m in _FENCED.finditer(text)]


def unclosed_fence(text: str) -> bool:
    return len(_FENCE_LINE.findall(text)) % 2 == 1


def sentences(text: str) -> list[str]:
    """Prose sentences (and list items / headings, one per line), markup trimmed."""
    out = []
    text = _LIST_MARKER.sub("", strip_code(text))  # "1. Mercury": "1." is no sentence
    for part in _SENTENCE_END.split(text):
        s = _MARKUP.sub("", part.strip()).strip()
        if WORD.search(s):
            out.append(s)
    return out


def words(text: str) -> list[str]:
    return WORD.findall(text)


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def word_count(text: str) -> int:
    """Words of `text`, each Chinese, Japanese or Korean character counted as one (those
    scripts write no spaces, so a whole clause would otherwise be one "word")."""
    return len(WORD.findall(_CJK.sub(" ", text))) + len(_CJK.findall(text))


@functools.lru_cache(maxsize=1 << 16)  # the same words recur across records
def stem(word: str) -> str:
    """A crude stem, enough to match "rewrites"/"rewriting"/"rewrite" and "cities"/"city"."""
    w = word.lower().replace("’", "'")
    w = re.sub(r"'s$", "", w)
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""), ("ly", "")):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)] + repl
            break
    # "provide"/"provided" and "adhere"/"adheres" meet at "provid"/"adher"
    return w[:-1] if len(w) > 4 and w.endswith("e") else w


def content_words(text: str) -> set[str]:
    """Stems of the words that carry content (no function words, numbers kept)."""
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return {stem(w) for w in WORD.findall(text) if w.lower() not in STOPWORDS}


def coverage(part: set[str], whole: set[str]) -> float:
    """Share of `part` found in `whole` (1.0 when `part` is empty)."""
    return len(part & whole) / len(part) if part else 1.0


def word_number(text: str) -> int | None:
    """ "five" -> 5, "twenty-five" -> 25, "three hundred" -> 300; else None."""
    total, current, seen = 0, 0, False
    for w in re.split(r"[\s-]+", text.lower().strip()):
        if w in _NUMBER_WORDS:
            current += _NUMBER_WORDS[w]
        elif w in _SCALES and seen:
            current = max(current, 1) * _SCALES[w]
            if _SCALES[w] >= 1000:
                total, current = total + current, 0
        elif w != "and":
            return None
        seen = True
    return total + current if seen else None


_SPELLED = re.compile(
    r"\b(?:(?:" + "|".join([*_NUMBER_WORDS, *_SCALES]) + r")(?:[\s-]+(?:and[\s-]+)?)?)+\b",
    re.IGNORECASE,
)


_SCALED = re.compile(
    r"(" + NUMBER.pattern + r")(\s*(?:thousand|million|billion|trillion)\b)?", re.IGNORECASE
)


def digit_numbers(text: str) -> set[Fraction]:
    """The numbers `text` writes in digits ("1,000", "5%", "3.50", "14 million" = 14000000),
    signs dropped."""
    values = set()
    for m in _SCALED.finditer(text):
        v = normalize_number(m.group(1))
        if v is not None:
            scale = _SCALES[m.group(2).strip().lower()] if m.group(2) else 1
            values.add(abs(v) * scale)
    return values


def spelled_numbers(text: str) -> set[Fraction]:
    """The numbers `text` writes in words ("five", "twenty-one", "two hundred")."""
    values = set()
    for m in _SPELLED.finditer(text):
        v = word_number(m.group(0))
        if v is not None:
            values.add(Fraction(v))
    return values


def number_values(text: str) -> set[Fraction]:
    """Every number `text` states, in digits or in words."""
    return digit_numbers(text) | spelled_numbers(text)


# A capitalised word inside a sentence (not its first word): a name, a place, a title, an
# acronym. Title-cased headings and bold labels are skipped by `entity_words`.
_CAPITAL = re.compile(r"(?<![\w'’])[A-Z][\w'’-]*[\w]|(?<![\w'’])[A-Z](?![\w'’])")
_MONTHS = frozenset(
    word_list(
        "january february march april may june july august september october november december "
        "monday tuesday wednesday thursday friday saturday sunday"
    )
)
_LABEL_LINE = re.compile(r"^\s*(?:#{1,6}\s|\*\*[^*]+\*\*\s*:?\s*$|[^\w]*[\w ]{1,40}:\s*$)")


def entity_words(text: str) -> set[str]:
    """Capitalised words of `text` that are not a sentence's first word, a heading or a label
    line, nor "I": the words that name people, places, works, organisations and months."""
    found: set[str] = set()
    for line in re.sub(r"`[^`\n]+`", " ", strip_code(text)).splitlines():  # inline code too
        if _LABEL_LINE.match(line):
            continue
        # A table cell, a label's value ("Type: Gas giant") and a sentence each start with a
        # capital that names nothing.
        for sent in re.split(r"\||[:;—–]\s|\*\*\s|(?<=[.!?])[\"')\]*_]*\s+", line):
            body = re.sub(r"^[^\w]*[\w'’-]+", "", sent.strip(), count=1)  # drop the first word
            for w in _CAPITAL.findall(body):
                if w not in {"I", "I'm", "I've", "I'd", "I'll"} and len(w) > 1:
                    found.add(w)
    return found


def known_word(word: str, sources: str) -> bool:
    """`word` (case-insensitively, or its stem) occurs in `sources`."""
    low = word.lower()
    if low in _MONTHS and low in sources.lower():
        return True
    pattern = rf"(?<![^\W_]){re.escape(low)}"
    if re.search(pattern, sources.lower()):
        return True
    return stem(word) in {stem(w) for w in WORD.findall(sources)}


def strip_comments(code: str) -> str:
    """Code with its comments and all whitespace removed, so a reindented or newly commented
    copy compares equal to the original."""
    code = re.sub(r"/\*.*?\*/|<!--.*?-->", "", code, flags=re.S)
    code = re.sub(
        r"(?m)(?:^|(?<=\s))(?://|#(?![!\[{(]|include|define|if|pragma)|--\s).*$", "", code
    )
    return re.sub(r"\s+", "", code)


@functools.cache
def _identifier():  # type: ignore[no-untyped-def]
    # py3langid: langid.py's naive Bayes model over byte n-grams, 97 languages, numpy only.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def languages(text: str) -> dict[str, float]:
    """The probability of each language (ISO 639-1 code) for `text`."""
    # 2,000 characters tell a language as well as the whole text, at a bounded cost.
    return {str(lang): float(p) for lang, p in _identifier().rank(text[:2000])}
