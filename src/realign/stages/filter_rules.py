"""The filter's safety rules: every preset runs them, so the original is kept whenever the
rewrite might have lost, changed or invented content (issue 20). Each takes a `FilterInput`
and returns the reason it fires, or None.

They are general measures, not phrase lists: a verdict's polarity, the items and code blocks
of the original, how a rewrite ends, whether its opening talks about itself, how much of the
original's content it keeps, which facts it adds, and its language.
"""

from __future__ import annotations

import re

from realign.stages.filter_answers import any_verdict, items_lost, list_items, opening_verdict
from realign.stages.filter_text import (
    FilterInput,
    code_blocks,
    content_words,
    coverage,
    digit_numbers,
    entity_words,
    known_word,
    languages,
    number_values,
    sentences,
    spelled_numbers,
    stem,
    strip_code,
    strip_comments,
    unclosed_fence,
    word_list,
    words,
)

# Off-topic: a rewrite that keeps under this share of the original's content words answers
# something else (copied evidence, another question). Faithful rewrites, even half as long,
# keep well over half of them.
MIN_CONTENT_KEPT = 0.4
# Below this many content words an original is too short to measure overlap on; the answer
# rules judge it instead.
MIN_CONTENT_WORDS = 8
# Language: both texts need this many words, and the identifier this confidence, to judge.
MIN_LANGUAGE_WORDS = 8
MIN_LANGUAGE_PROB = 0.6

_VERDICT_NAMES = {True: "yes/true", False: "no/false"}


def rule_truncated(x: FilterInput) -> str | None:
    if x.finish_reason == "length":
        return "the model stopped at its output limit (finish reason 'length')"
    if unclosed_fence(x.rewrite) and not unclosed_fence(x.original):
        return "the rewrite ends inside a code block (its fence is never closed)"
    blocks = code_blocks(x.rewrite)
    if blocks and _open_brackets(blocks[-1]) > 0 >= _open_brackets(
        "".join(code_blocks(x.original))
    ):
        return "the rewrite's last code block leaves a bracket open"
    return _ends_mid_sentence(x.original, x.rewrite)


def _open_brackets(code: str) -> int:
    code = re.sub(r"(\"|')(?:\\.|(?!\1).)*\1", "", code)  # string literals
    return sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")


# Words no sentence ends on: a text that stops at one was cut.
_DANGLING = frozenset(
    word_list("""a an the and or but nor of to with for from at by as that which who whose because such
    than into onto about like if when while whereas although though so is are was were be
    been being has have had their its our your my his her this these those very more most
    such including between among during without within""")
)
_TERMINAL = re.compile(r"[.!?:;…)\]}\"'”’%\d]$|[^\w\s,]$")


def _ends_mid_sentence(original: str, rewrite: str) -> str | None:
    prose = strip_code(rewrite).rstrip()
    if not prose or (strip_code(rewrite) != rewrite and rewrite.rstrip().endswith(("```", "~~~"))):
        return None  # ends with a closed code block
    last = prose.splitlines()[-1].strip()
    if last.startswith(("#", "|")):
        return None  # a heading or a table row
    text = re.sub(r"[*_`\s]+$", "", last)
    if not text or _TERMINAL.search(text):
        return None
    tail = words(text)
    if not tail:
        return None
    last_word = tail[-1].lower()
    # A list item or a "Label: value" line needs no full stop.
    is_item = re.match(r"^(?:[-*+•]|\d+[.)])\s|^[*_]*[\w' ]{1,30}:", last) is not None
    option = len(tail[-1]) == 1 and tail[-1].isupper()  # "… is A": an option, no article
    if text.endswith((",", "-", "–", "—")) or (last_word in _DANGLING and not option):
        return f"the rewrite ends mid-sentence: …{text[-40:]!r}"
    if _cut_word(tail[-1], original):
        return f"the rewrite ends mid-word: …{text[-40:]!r}"
    if is_item or len(tail) < 6:
        return None  # a list item or a short label need no full stop
    o_last = (
        re.sub(r"[*_`\s]+$", "", strip_code(original).rstrip().splitlines()[-1:][0])
        if (strip_code(original).strip())
        else ""
    )
    if o_last and not _TERMINAL.search(o_last):
        return None  # the original ends the same way: its style, not a cut
    return f"the rewrite stops without finishing its last sentence: …{text[-40:]!r}"


def _cut_word(word: str, original: str) -> bool:
    """`word` is the start of a longer word of the original but no word of its own there
    ("tighten the nuts in a st" for "star"): the text was cut inside it."""
    low = word.lower()
    if len(low) < 2 or not low.isalpha():
        return False
    known = {w.lower() for w in words(original)}
    return low not in known and any(w.startswith(low) and len(w) > len(low) + 1 for w in known)


# "Can you give me a recipe?" — "Yes! Here it is: …": a request, whose "yes" is politeness.
_REQUEST = re.compile(r"^\W*(?:(?:can|could|would|will)\s+(?:you|u)\b|please\b)", re.IGNORECASE)


def rule_verdict(x: FilterInput) -> str | None:
    said = opening_verdict(x.original)
    if said is None or _REQUEST.match(x.instruction):
        return None
    got = opening_verdict(x.rewrite, 3)
    if got is None:
        got = any_verdict(x.rewrite)
    if got is None:
        return f"the original's verdict ({_VERDICT_NAMES[said]}) is not in the rewrite"
    if got != said:
        return (
            f"the rewrite's verdict ({_VERDICT_NAMES[got]}) contradicts the original's "
            f"({_VERDICT_NAMES[said]})"
        )
    return None


def rule_list_items(x: FilterInput) -> str | None:
    items = list_items(strip_code(x.original))
    if len(items) < 2:
        return None
    lost = items_lost(items, x.rewrite)
    if lost:
        return f"{len(lost)} of the original's {len(items)} list items are missing: {lost[0]!r}"
    return None


_CODE_START = re.compile(
    r"^\s*(?:(?:async\s+)?def|class|function|fn|func|public|private|static|int|void|import|"
    r"from|const|let|var|#include|SELECT|select)\b.*$",
    re.MULTILINE,
)


def bare_code(text: str) -> list[str]:
    """Code an original writes without a fence: from its first line that opens a definition
    or a statement, the lines that follow it indented, blank or closing a bracket."""
    if code_blocks(text) or not (m := _CODE_START.search(text)):
        return []
    lines = [m.group(0)]
    for line in text[m.end() :].splitlines()[1:]:
        if line.strip() and not re.match(r"^(?:\s+|[)\]}])", line):
            break
        lines.append(line)
    return ["\n".join(lines)]


def rule_code_changed(x: FilterInput) -> str | None:
    blocks = [b for b in code_blocks(x.original) or bare_code(x.original) if strip_comments(b)]
    if not blocks:
        return None
    mine = strip_comments("".join(code_blocks(x.rewrite)))
    whole = strip_comments(x.rewrite)
    for n, block in enumerate(blocks, 1):
        code = strip_comments(block)
        if code not in mine and code not in whole:
            return f"code block {n} of the original is not in the rewrite unchanged"
    return None


# Meta-text: a sentence about the response itself. It names the text as an object (the
# response, its format, the requirements…) and says what it does to it, and shares little
# content with the original.
_META_NOUNS = frozenset(
    stem(w)
    for w in word_list("""response answer reply format formatting requirement criterion criteria
    instruction guideline rewrite rewriting revision version request structure template prompt
    task specification style output guide rubric standard""")
)
_META_VERBS = frozenset(
    stem(w)
    for w in word_list("""meet follow adhere satisfy comply design provide fulfil fulfill align improve
    present restructure organize organise reformat rewrite revise specify request give require
    ask outline describe above below following previous original revised updated new requested
    specified given improved desired rewritten written reworded""")
)
_REFUSAL = re.compile(
    r"\bI(?:'m|’m| am)? (?:not (?:sure|certain|able to)|unsure|uncertain|unable to)\b|"
    r"\bI (?:do not|don't|don’t) (?:know|have (?:enough|access|the (?:information|data)))\b|"
    r"\b(?:is|are|was|were) not (?:provided|given|mentioned|specified|stated|available)\b|"
    r"\bnot (?:provided|given|mentioned|specified|stated) in the\b|"
    r"\bI (?:cannot|can't|can’t|can not|won't|will not|must decline to) "
    r"(?:answer|provide|determine|help|say|assist|comply|tell|verify|confirm|give)\b|"
    r"\bthere is no (?:information|answer|way to (?:know|tell|determine))\b|"
    r"\b(?:cannot|can't|can’t) be (?:determined|answered|known)\b|"
    r"\bI(?:'m|’m| am) sorry,? but\b|\bI apologi[sz]e\b|\bas an AI\b|"
    r"\b(?:hard|difficult|impossible) to (?:say|tell|know) (?:for sure|without)\b",
    re.IGNORECASE,
)


def meta_sentence(sentence: str, allowed: set[str], original: set[str]) -> bool:
    """A sentence that talks about the response (its format, the request, the rewriting)
    rather than the subject. `allowed`: words of the request and original, which are the
    subject there ("What format should a CV have?")."""
    stems = content_words(sentence)
    nouns = (stems & _META_NOUNS) - allowed
    if not nouns:
        return False
    deictic = re.search(
        r"\b(?:this|these|above|below|the following|here is|here's|my)\b", sentence, re.IGNORECASE
    )
    if not (stems & _META_VERBS or deictic):
        return False
    rest = stems - _META_NOUNS - _META_VERBS
    return not rest or coverage(rest, original) < 0.5


def meta_reason(x: FilterInput) -> str | None:
    """Why the rewrite reads as talk about itself or as a refusal, or None."""
    allowed = content_words(x.instruction) | content_words(x.original)
    original = content_words(x.original)
    sents = sentences(x.rewrite)
    if not sents:
        return None if words(x.rewrite) else "the rewrite has no text"  # code alone is fine
    flagged = [s for s in sents if meta_sentence(s, allowed, original)]
    if flagged and (
        flagged[0] in sents[:2] or flagged[-1] == sents[-1] or len(flagged) * 3 >= len(sents)
    ):
        return f"the rewrite talks about the response instead of answering: {flagged[0][:80]!r}"
    if x.task_type == "rejecting" or _REFUSAL.search(x.original):
        return None  # the original already declines or hedges: saying so again is fine
    if m := _REFUSAL.search(x.rewrite):
        return f"the rewrite refuses or gives no answer where the original did: {m.group(0)!r}"
    return None


def rule_off_topic(x: FilterInput) -> str | None:
    original = content_words(strip_code(x.original))
    rewrite = content_words(strip_code(x.rewrite))
    if len(original) < MIN_CONTENT_WORDS:
        return None
    kept = coverage(original, rewrite)
    if x.evidence and kept < 0.6:
        # Most of the rewrite is search evidence the original does not have: copied evidence
        # about the subject rather than the original's answer.
        added = rewrite - original
        from_evidence = added & content_words(" ".join(x.evidence))
        if len(rewrite) >= MIN_CONTENT_WORDS and len(from_evidence) * 2 > len(rewrite):
            return (
                f"most of the rewrite comes from the search evidence and it keeps {kept:.0%} "
                "of the original's content words: it does not give the original's answer"
            )
    if kept < MIN_CONTENT_KEPT:
        source = ""
        if x.evidence:
            evidence = content_words(" ".join(x.evidence))
            if coverage(rewrite - original, evidence) > 0.5:
                source = "; most of it comes from the search evidence"
        return (
            f"the rewrite keeps {kept:.0%} of the original's content words (under "
            f"{MIN_CONTENT_KEPT:.0%}): it answers something else{source}"
        )
    asked = content_words(x.instruction) & original
    missing = asked - rewrite
    if kept < 0.6 and len(asked) >= 2 and len(missing) * 3 > len(asked) * 2:
        return (
            f"the rewrite leaves out the request's subject ({', '.join(sorted(missing)[:4])}), "
            "which the original answered"
        )
    return None


# A number that only counts the answer's own parts: "1.", "### 2.", "**Step 3 —", "Day 2:".
_MARKER = re.compile(
    r"(?im)^[\s#>*_]*(?:[-*+•]\s+)?[*_]*(?:\d+[.)]|(?:step|day|part|phase|week|option|section|"
    r"tip|point|item|stage|chapter|method|way|reason|round|level|lesson)\s+\d+)"
)


def rule_invented(x: FilterInput) -> str | None:
    sources = x.sources
    text = _MARKER.sub(" ", strip_code(x.rewrite))
    known_numbers = number_values(sources)
    lines = text.splitlines()
    if x.numeric:  # worked steps may compute new numbers: only lines without arithmetic count
        lines = [ln for ln in lines if not re.search(r"[=+×÷*/^]|\d\s*-\s*\d", ln)]
    said = "\n".join(lines)
    # Small numbers in words ("two reasons", "three steps") describe the answer's own shape.
    stated = digit_numbers(said) | {v for v in spelled_numbers(said) if v > 10}
    new_numbers = sorted(stated - known_numbers)
    if new_numbers:
        shown = ", ".join(str(v) for v in new_numbers[:3])
        return f"the rewrite states numbers found in neither the original nor its sources: {shown}"
    names = sorted(w for w in entity_words(x.rewrite) if not known_word(w, sources))
    if names:
        return "the rewrite names what neither the original nor its sources mention: " + ", ".join(
            names[:4]
        )
    return contradiction(x.original, x.rewrite)


def rule_language(x: FilterInput) -> str | None:
    # Without code and markup (table pipes, bold, headings), which no language writes.
    o, r = (re.sub(r"[|*_#>`]+", " ", strip_code(t)) for t in (x.original, x.rewrite))
    if len(words(o)) < MIN_LANGUAGE_WORDS or len(words(r)) < MIN_LANGUAGE_WORDS:
        return None  # too short to tell a language with confidence
    lo, lr = languages(o), languages(r)
    o_lang, r_lang = max(lo, key=lo.__getitem__), max(lr, key=lr.__getitem__)
    if o_lang == r_lang or lo[o_lang] < MIN_LANGUAGE_PROB or lr[r_lang] < MIN_LANGUAGE_PROB:
        return None
    if lr.get(o_lang, 0.0) >= 0.05:
        return None  # the original's language is still plausible for the rewrite
    return f"the rewrite is in another language ({r_lang}) than the original ({o_lang})"


# Contradiction: a rewrite sentence that says what an original sentence says (most content
# words shared) but with the opposite polarity: a negation added or removed, or a word
# swapped for its opposite ("more" for "less").
_NEGATIONS = re.compile(
    r"\b(?:not|no|never|none|nothing|cannot|neither|nor|without)\b|n[’']t\b", re.IGNORECASE
)
_OPPOSITES: dict[str, set[str]] = {}
for _pair in word_list("""more/less more/fewer increase/decrease increases/decreases higher/lower
    larger/smaller bigger/smaller before/after above/below faster/slower always/never
    safe/unsafe safe/dangerous easy/difficult easy/hard cheap/expensive hot/cold warm/cool
    strong/weak rise/fall rises/falls positive/negative minimum/maximum early/late first/last
    possible/impossible legal/illegal true/false correct/incorrect win/lose gain/loss
    increase/reduce increases/reduces raise/lower raises/lowers most/least best/worst
    better/worse high/low long/short heavy/light inside/outside include/exclude
    allowed/forbidden accept/reject add/remove open/closed"""):
    _a, _b = (stem(w) for w in _pair.split("/"))
    _OPPOSITES.setdefault(_a, set()).add(_b)
    _OPPOSITES.setdefault(_b, set()).add(_a)
MIN_ALIGNED = 0.6  # share of content words two sentences must have in common to be compared
MIN_ALIGNED_WORDS = 4


def _negations_about(statement: str, other: set[str]) -> int:
    """How many negations of `statement` bear on words `other` also has: the content words
    just around a negation (two words before, six after) must be among them, so a negation in
    a part the other statement does not restate ("…, but 1900 was not") is not counted."""
    tokens = words(statement.replace("n't", " not").replace("n’t", " not"))
    count = 0
    for i, t in enumerate(tokens):
        if _NEGATIONS.fullmatch(t) or t.lower() == "cannot":
            near = content_words(" ".join(tokens[max(0, i - 2) : i] + tokens[i + 1 : i + 7]))
            count += bool(near & other)
    return count


def _polar_stems(sentence: str) -> set[str]:
    return {stem(w) for w in words(sentence)}


_LEADING_VERDICT = re.compile(r"^\W*(?:no|yes|not really|nope|true|false)\b[\W]*", re.IGNORECASE)


def _statements(text: str) -> list[str]:
    """Sentences split further at colons, semicolons and dashes, a leading "No,"/"Yes," dropped (a
    verdict is `verdict_lost`'s to compare)."""
    parts = (p for s in sentences(text) for p in re.split(r"[:;]\s|\s[—–-]\s", s))
    return [_LEADING_VERDICT.sub("", p).strip() for p in parts if p.strip()]


def contradiction(original: str, rewrite: str) -> str | None:
    """A rewrite statement that reverses the original one it restates, or None. Only
    statements of some length that share most of their content words are compared: a
    restatement, not a neighbour."""
    originals = [(o, content_words(o) - set(_OPPOSITES)) for o in _statements(original)]
    originals = [(o, ow) for o, ow in originals if len(ow) >= MIN_ALIGNED_WORDS]
    for r in _statements(rewrite):
        rw = content_words(r) - set(_OPPOSITES)
        if len(rw) < MIN_ALIGNED_WORDS:
            continue
        best, share = max(
            ((o, len(rw & ow) / len(rw | ow)) for o, ow in originals),
            key=lambda t: t[1],
            default=("", 0.0),
        )
        if share < MIN_ALIGNED:
            continue
        if _negations_about(best, rw) % 2 != _negations_about(r, content_words(best)) % 2:
            return f"the rewrite negates what the original says: {r[:80]!r} vs {best[:80]!r}"
        ow_all, rw_all = _polar_stems(best), _polar_stems(r)
        for w in sorted(rw_all - ow_all):
            if swapped := _OPPOSITES.get(w, set()) & (ow_all - rw_all):
                return (
                    f"the rewrite says {w!r} where the original says {min(swapped)!r}: {r[:80]!r}"
                )
        if flipped := _order_flipped(best, r):
            return f"the rewrite swaps {flipped[0]!r} and {flipped[1]!r}: {r[:80]!r}"
    return None


def _order_flipped(original: str, rewrite: str) -> tuple[str, str] | None:
    """Two opposite words both statements use, in the other order ("the short blue waves
    scatter more than the long red ones" restated with "long" first): what each qualifies
    was swapped."""
    o = [stem(w) for w in words(original)]
    r = [stem(w) for w in words(rewrite)]
    for a in sorted(set(o) & set(r)):
        for b in sorted(_OPPOSITES.get(a, set()) & set(o) & set(r)):
            if a < b and (o.index(a) < o.index(b)) != (r.index(a) < r.index(b)):
                return a, b
    return None
