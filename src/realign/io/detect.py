"""Tell a dataset's format from its first records; name the keys seen when unsure."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from realign.io.formats import FORMAT_NAMES, LIST_KEY, FormatError

# How many records auto-detection looks at.
DETECT_SAMPLE = 20
# Keys likely to hold an instruction / a response, for the `--fields` hint in detection errors.
_INSTRUCTION_GUESSES = ("instruction", "question", "prompt", "query", "problem", "input", "text")
_RESPONSE_GUESSES = ("response", "answer", "output", "completion", "solution", "target", "chosen")


def _looks_like(obj: Mapping[str, Any]) -> list[str]:
    hits = [fmt for fmt, key in LIST_KEY.items() if isinstance(obj.get(key), list)]
    if "instruction" in obj and "output" in obj:
        hits.append("alpaca")
    return hits


def detect_format(objs: Iterable[Mapping[str, Any]]) -> str:
    """The format of the first records; `FormatError` naming the keys seen when unsure.

    `fields` is never guessed: a flat object needs an explicit `--fields` mapping.
    """
    sample = [o for o in objs if isinstance(o, Mapping)][:DETECT_SAMPLE]
    if not sample:
        raise FormatError("no JSON object among the first records: cannot detect the format")
    votes: Counter[str] = Counter()
    for i, obj in enumerate(sample):
        hits = _looks_like(obj)
        if len(hits) > 1:
            raise FormatError(
                f"ambiguous format: record {i} has keys {sorted(obj)} that fit "
                f"{' and '.join(hits)}; pass --input-format {'|'.join(hits)}"
            )
        if hits:
            votes[hits[0]] += 1
    if len(votes) > 1:
        seen = ", ".join(f"{fmt} ({n} records)" for fmt, n in votes.most_common())
        raise FormatError(
            f"ambiguous format: the first {len(sample)} records look like {seen}; "
            f"pass --input-format {'|'.join(votes)}"
        )
    if votes:
        return next(iter(votes))
    keys: Counter[str] = Counter(k for o in sample for k in o)
    seen_keys = ", ".join(f"{k} ({n})" for k, n in keys.most_common(20))
    raise FormatError(
        f"unknown format: keys seen in the first {len(sample)} records: {seen_keys}. "
        f"Pass --input-format {{{','.join(FORMAT_NAMES)}}}, or map a flat record with "
        f"{_fields_hint(sample)}"
    )


def _fields_hint(sample: list[Mapping[str, Any]]) -> str:
    str_keys = {k for o in sample for k, v in o.items() if isinstance(v, str)}
    instr = next((k for k in _INSTRUCTION_GUESSES if k in str_keys), None)
    resp = next((k for k in _RESPONSE_GUESSES if k in str_keys and k != instr), None)
    return f"--fields instruction={instr or 'KEY'},response={resp or 'KEY'}"
