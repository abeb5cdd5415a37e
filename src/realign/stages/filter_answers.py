"""Where a response states its answer: short answers, option letters, final numbers, verdicts
(yes/no, true/false, …) and the items of a list. The filter compares these between the
original and the rewrite.
"""

from __future__ import annotations

import re

from realign.metrics import GSM8K, NUMBER, boxed_contents, normalize_number
from realign.stages.filter_text import (
    STOPWORDS,
    content_words,
    number_values,
    sentences,
    stem,
    words,
)

_FENCE = re.compile(r"```")
_FUNC_DEF = re.compile(
    r"^\s*(?:async\s+)?def\s+\w+\s*\(|"  # Python
    r"\bfunction\s+\w+\s*\(|"  # JavaScript / PHP
    r"^\s*(?:public|private|protected|static|\s)+[\w<>\[\]]+\s+\w+\s*\([^)]*\)\s*\{|"  # Java/C#
    r"^\s*(?:int|void|char|float|double|bool|auto)\s+\w+\s*\([^)]*\)\s*\{|"  # C/C++
    r"^\s*fn\s+\w+\s*\(|^\s*func\s+\w+\s*\(",  # Rust, Go
    re.MULTILINE,
)
_WORD = re.compile(r"[^\W_]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
# An option letter as answers write it: "(C)", "C)", "C.", "C:" or a capital letter alone.
_OPTION = re.compile(r"\(([A-Za-z])\)|(?<![\w(])([A-Z])(?:[).:]|\s*$)")
# Words that frame a short answer rather than carry it ("It is Paris." carries "Paris").
FRAME_WORDS = frozenset(
    re.findall(
        r"\S+",
        """a an the is are was were be been it its s this that these those there here of in on
        at to for from by with as and or so then thus therefore hence answer correct right
        option choice final i we you he she they his her their my our your think believe
        guess say says has have had do does did can will would should could may might must""",
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
    found = _WORD.findall(text)
    if len(found) <= 1:
        return found
    terms = [w for w in found if (len(w) > 1 or w.isdigit()) and w.lower() not in FRAME_WORDS]
    terms += [a or b for a, b in _OPTION.findall(text)]
    return list(dict.fromkeys(terms))


def has_term(term: str, text: str) -> bool:
    """`term` as a whole word of `text`. Single letters are case-sensitive (an option "A" is
    not the article "a"), everything else is not."""
    text = _THOUSANDS.sub("", text)
    if len(term) == 1:
        return re.search(rf"(?<![^\W_]){re.escape(term)}(?![^\W_])", text) is not None
    found = _WORD.findall(text)
    if term.lower() in {w.lower() for w in found}:
        return True
    # "eight" == "8", "spider" == "spiders"
    value = number_values(term)
    if value and value <= number_values(text):
        return True
    return len(term) > 3 and not term[0].isdigit() and stem(term) in {stem(w) for w in found}


def question_of(instruction: str) -> str:
    """The question of a request, without a passage pasted after it: its first line, up to
    its first question mark."""
    first = re.split(r"(?<=\?)|\n", instruction.strip(), maxsplit=1)[0]
    # A passage quoted in the request ("Extract every deadline from: '…'") is no question.
    return re.sub(r"(['\"“‘]).{20,}?(?:\1|[’”]|$)", " ", first)


def answer_not_subject(terms: list[str], instruction: str) -> list[str]:
    """The terms of an answer the question does not already name ("France" in "Paris is the
    capital of France" answers nothing); all of them if that would leave none."""
    question = question_of(instruction)
    kept = [t for t in terms if len(t) == 1 or not has_term(t, question)]
    return kept or terms


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


def final_answers(text: str) -> list[str]:
    """Where `text` may state its final number, most explicit first: the last `#### N`, the
    last `\\boxed{}`, the stated answer's last number, the numbers of the last line."""
    found = []
    if g := GSM8K.findall(text):
        found.append(g[-1].strip())
    if b := boxed_contents(text):
        found.append(b[-1])
    stated = stated_answer(text)
    if stated and (n := last_number(stated)):
        found.append(n)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        found += NUMBER.findall(lines[-1])[::-1]
    return found


# Verdicts: a polarity word said on its own ("No, …", "True.") or as a predicate ("the claim
# is false", "that is not correct", "I disagree"). A myth/misconception is a "no".
_POSITIVE = {"yes", "true", "correct", "valid", "agree", "right", "accurate", "indeed"}
_NEGATIVE = {
    "no",
    "false",
    "incorrect",
    "invalid",
    "disagree",
    "wrong",
    "inaccurate",
    "untrue",
    "misleading",
    "myth",
}
_NEGATIVE_NOUNS = r"myth|misconception|misbelief|fallacy|falsehood"
_VERDICT_WORDS = "|".join(sorted(_POSITIVE | _NEGATIVE, key=len, reverse=True))
# "No, …", "Not really.", "**Verdict:** False", "Short answer: yes" (a label of a few words).
_STANDALONE = re.compile(
    rf"^(?:[\w ]{{1,25}}:\s*)?(?:(?:usually|generally|mostly|probably|basically|largely|"
    rf"broadly|technically|honestly|in short|in general|in most cases)\s*,?\s*)?"
    rf"({_VERDICT_WORDS}|not true|not correct|not really|not quite|"
    rf"not exactly|not at all|nope|yep|absolutely|definitely|certainly|of course)"
    rf"(?:\s*[,.!;:—–)(-]|\s*$)",
    re.I,
)
_PREDICATE = re.compile(
    rf"\b(?:is|are|was|were|'s|seems|appears|sounds|be)\s+(?:(?:completely|entirely|partly|"
    rf"absolutely|simply|actually|definitely|largely|mostly|factually|technically)\s+)?"
    rf"(not\s+|n't\s+)?(true|false|correct|incorrect|valid|invalid|right|wrong|accurate|"
    rf"inaccurate|untrue)\b|\bi\s+(?:do\s+not\s+|don't\s+|would\s+not\s+|wouldn't\s+)?"
    rf"(?:(?:completely|strongly|fully|partly)\s+)?(agree|disagree)\b|"
    rf"\b(?:is|are|was|were|'s)\s+(?:just\s+|only\s+|a\s+|an\s+|common\s+)*(?:common\s+)?"
    rf"({_NEGATIVE_NOUNS})\b|\b(not|n't)\s+(?:\w+\s+)?(?:a\s+)?({_NEGATIVE_NOUNS})\b",
    re.IGNORECASE,
)


_SHORT_VERDICT = re.compile(rf"\b(not\s+)?({_VERDICT_WORDS})\b", re.IGNORECASE)


def sentence_verdict(sentence: str) -> bool | None:
    """True (yes), False (no) or None for one sentence."""
    s = re.sub(r"[*_`]", "", sentence).strip().lower().replace("’", "'")
    if m := _STANDALONE.match(s):
        w = m.group(1)
        return not (w in _NEGATIVE or w.startswith("not ") or w == "nope")
    if len(words(s)) <= 6 and (m := _SHORT_VERDICT.search(s)):
        # a verdict line of a few words: "Verdict: misleading / not true", "Mostly false."
        return not (m.group(2) in _NEGATIVE or m.group(1))
    if m := _PREDICATE.search(s):
        neg, word, agree, noun, noun_neg, noun2 = m.groups()
        if word:
            return (word in _POSITIVE) != bool(neg)
        if agree:
            flipped = re.search(r"\b(?:not|n't)\b", m.group(0)) is not None
            return (agree == "agree") != flipped
        if noun:
            return False
        if noun_neg and noun2:
            return True
    return None


def opening_verdict(text: str, n: int = 2) -> bool | None:
    """The verdict of the first of `text`'s first `n` sentences that has one."""
    for s in sentences(text)[:n]:
        v = sentence_verdict(s)
        if v is not None:
            return v
    return None


def any_verdict(text: str) -> bool | None:
    """The first verdict anywhere in `text` (a rewrite may put it under a heading)."""
    for s in sentences(text):
        v = sentence_verdict(s)
        if v is not None:
            return v
    return None


_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|[a-z][.)])\s+(.+)$", re.M)


def list_items(text: str) -> list[str]:
    """The items of the bulleted or numbered lists of `text`, markup removed, each cut to its
    first sentence (at most 20 words)."""
    items = []
    for m in _ITEM.finditer(text):
        first = re.split(r"(?<=[.!?])\s", m.group(1), maxsplit=1)[0]
        items.append(" ".join(words(re.sub(r"[*_`]", "", first))[:20]))
    return [i for i in items if i]


def items_lost(items: list[str], rewrite: str) -> list[str]:
    """The items whose own words are gone from `rewrite`. An item's own words are those no
    other item uses ("magenta" in "Blue: with red it makes magenta"): at least a third of them
    (and one at least) must survive, stemmed."""
    have = content_words(rewrite)
    bags = [content_words(i) for i in items]
    lost = []
    for n, (item, bag) in enumerate(zip(items, bags, strict=True)):
        others = set().union(*(b for m, b in enumerate(bags) if m != n))
        own = (bag - others) or bag
        if own and len(own & have) * 3 < len(own):
            lost.append(item)
    return lost


# An original up to this long is a brief answer: the names and numbers of its first sentence
# are the answer ("Oliver Grant signed it on behalf of the supplier.", "Polish. It means …").
BRIEF_ANSWER_WORDS = 30
_ORDER_WORDS = re.compile(
    r"\b(?:order|rank|sort|arrange|sequence|chronological\w*|ascending|descending|earliest|"
    r"oldest|newest|nearest|closest|farthest|smallest|largest|biggest|highest|lowest)\b",
    re.IGNORECASE,
)


def brief_terms(original: str, instruction: str = "") -> list[str]:
    """The names, numbers and formulas of a brief original's first sentence, less those the
    request already names (the subject, not the answer: "France" in "Paris is the capital of
    France"). Its first word counts too unless it is a function word, a verdict, an adverb
    ("Usually") or an exclamation ("Sure!"): "Mars is known as the Red Planet"."""
    first = sentences(original)[:1]
    text = _THOUSANDS.sub("", first[0]) if first else ""
    found = _WORD.findall(text)
    # The question itself, not a passage pasted after it (whose names may be the answer).
    question = question_of(instruction)
    exclaims = text.rstrip(" *_").endswith("!") or re.match(r"^\W*\w+\s*!", text) is not None
    plain = FRAME_WORDS | STOPWORDS | _POSITIVE | _NEGATIVE
    terms = []
    for i, w in enumerate(found):
        low = w.lower()
        named = w[0].isupper() and len(w) > 1 and low not in plain
        if i == 0:
            named = named and not exclaims and not low.endswith("ly")
        if (named or any(c.isdigit() for c in w)) and not has_term(w, question):
            terms.append(w)
    # A formula or an expression that opens the answer: "O(log n), because …" -> O, log, n.
    head = re.match(r"^\s*([^,:;]{1,20}?[()=^+*/<>][^,:;]{0,20}?)(?:[,:;]|\s+because\b|$)", text)
    if head:
        terms += [w for w in _WORD.findall(head.group(1)) if not has_term(w, question)]
    return list(dict.fromkeys(terms + enumerated(text, question)))


def enumerated(sentence: str, question: str = "") -> list[str]:
    """The heads of the items a sentence enumerates ("red, yellow and blue" -> red, yellow,
    blue; "strengthens the heart, helps control weight, and lowers the risk" -> heart, weight,
    lowers), less those the question names. A list is comma-separated parts of a few words
    each whose last part opens with (or soon has) "and"/"or"."""
    parts = [p.strip() for p in sentence.rstrip(" .!?;").split(",")]
    if len(parts) < 2:
        return []
    last = _WORD.findall(parts[-1])
    joint = next((i for i, w in enumerate(last[:6]) if w.lower() in ("and", "or")), None)
    middle = parts[1:-1]
    if len(parts) == 2 and joint is not None and joint > 2:
        joint = None  # "In 1990, the club moved to Leeds and grew": one comma, no list
    if (
        joint is None
        or any(len(_WORD.findall(p)) > 6 for p in middle)
        or not _WORD.findall(parts[0])
    ):
        return []
    heads = [_WORD.findall(parts[0])[-1]] + [
        _WORD.findall(p)[-1] for p in middle if _WORD.findall(p)
    ]
    if joint > 0:  # "yellow and blue": both
        heads.append(last[joint - 1])
    if joint + 1 < len(last):
        heads.append(last[joint + 1])
    return [
        h
        for h in dict.fromkeys(heads)
        if h.lower() not in FRAME_WORDS and not has_term(h, question)
    ]


def order_lost(terms: list[str], rewrite: str, instruction: str) -> str | None:
    """When the request asks for an order, the answer's items keep theirs in the rewrite."""
    if len(terms) < 3 or not _ORDER_WORDS.search(instruction):
        return None
    low = rewrite.lower()
    spots = [
        m.start() if (m := re.search(rf"(?<![^\W_]){re.escape(t.lower())}(?![^\W_])", low)) else -1
        for t in terms
    ]
    if -1 not in spots and spots != sorted(spots):
        shown = sorted(terms, key=lambda t: spots[terms.index(t)])
        return f"the rewrite puts the answer's items in another order: {', '.join(shown)}"
    return None
