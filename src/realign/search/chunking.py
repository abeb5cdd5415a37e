"""Split documents into overlapping passages for the local BM25 index (pure functions).

Rule: paragraphs (blank-line separated) are kept whole when they fit; longer ones are split
into sentences, and a sentence longer than `max_tokens` is cut by tokens. Pieces are packed
greedily into chunks of up to `max_tokens` (cl100k tokens), a chunk being closed once it
reaches `target_tokens`. Each new chunk starts with the last sentences of the previous one
(up to `overlap_tokens`) so a fact cut at a boundary is still found whole in one chunk.
"""

from __future__ import annotations

import re

from realign import tokens

TARGET_TOKENS = 200
MAX_TOKENS = 250
OVERLAP_TOKENS = 40

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _pieces(text: str, max_tokens: int) -> list[str]:
    """Paragraphs, or sentences of over-long paragraphs, or token slices of over-long sentences."""
    out: list[str] = []
    for para in _PARAGRAPH.split(text):
        para = " ".join(para.split())
        if not para:
            continue
        if tokens.count(para) <= max_tokens:
            out.append(para)
            continue
        for sent in split_sentences(para):
            while tokens.count(sent) > max_tokens:
                head = tokens.truncate(sent, max_tokens)
                out.append(head)
                sent = sent[len(head) :].strip()
            if sent:
                out.append(sent)
    return out


def _tail(text: str, overlap_tokens: int) -> str:
    """The last whole sentences of `text` that fit in `overlap_tokens` ('' when none fits)."""
    kept: list[str] = []
    used = 0
    for sent in reversed(split_sentences(text)):
        n = tokens.count(sent)
        if used + n > overlap_tokens:
            break
        kept.insert(0, sent)
        used += n
    return " ".join(kept)


def chunk_text(
    text: str,
    *,
    target_tokens: int = TARGET_TOKENS,
    max_tokens: int = MAX_TOKENS,
    overlap_tokens: int = OVERLAP_TOKENS,
) -> list[str]:
    """Passages of `text` following the module rule. A short text is one passage."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    fresh = 0  # tokens added since the overlap, so an overlap alone never makes a chunk
    for piece in _pieces(text, max_tokens):
        n = tokens.count(piece)
        if current and size + n > max_tokens:
            if fresh:
                chunks.append(" ".join(current))
                tail = _tail(chunks[-1], min(overlap_tokens, max_tokens - n))
            else:  # only the overlap is pending and it does not fit beside this piece
                tail = ""
            current, size, fresh = ([tail], tokens.count(tail), 0) if tail else ([], 0, 0)
        current.append(piece)
        size += n
        fresh += n
        if size >= target_tokens:
            chunks.append(" ".join(current))
            tail = _tail(chunks[-1], overlap_tokens)
            current, size, fresh = ([tail], tokens.count(tail), 0) if tail else ([], 0, 0)
    if current and fresh:
        chunks.append(" ".join(current))
    return chunks
