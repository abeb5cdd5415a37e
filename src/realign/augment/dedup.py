"""Near-duplicate detection for generated data, with no dependency beyond the standard library.

Texts are normalized (lower case, words only, apostrophes dropped) and turned into word 3-gram shingles (fewer for
texts of one or two words). Two texts are near-duplicates when the Jaccard similarity of their
shingle sets is at least `threshold`. Candidates are found with MinHash + LSH banding (64
hashes in 16 bands of 4: pairs above ~0.5 similarity almost always share a band), then checked
with the exact Jaccard, so the answer never depends on the hashing luck of a single pair.
Deterministic: the hash functions come from a fixed seed, not Python's salted `hash`.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict

_WORD = re.compile(r"\w+")
_APOSTROPHE = re.compile(r"['’]")
_PRIME = (1 << 61) - 1
_MAX_HASH = (1 << 32) - 1


def words(text: str) -> list[str]:
    # "Moon's" and "Moons" are the same word here; punctuation never counts.
    return _WORD.findall(_APOSTROPHE.sub("", text.lower()))


def shingles(text: str, n: int = 3) -> frozenset[int]:
    """Hashed word n-grams of the normalized text (empty for a text with no words)."""
    ws = words(text)
    if not ws:
        return frozenset()
    k = min(n, len(ws))
    grams = (" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1))
    return frozenset(
        int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams
    )


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class NearDuplicates:
    """Remembers kept texts; `check(key, text)` says which kept text a new one duplicates."""

    def __init__(
        self, threshold: float = 0.8, *, num_perm: int = 64, bands: int = 16, seed: int = 1
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold = threshold
        self.bands = bands
        self.rows = num_perm // bands
        rng = random.Random(seed)
        self._perms = [
            (rng.randrange(1, _PRIME), rng.randrange(0, _PRIME)) for _ in range(num_perm)
        ]
        self._buckets: dict[tuple[int, tuple[int, ...]], list[str]] = defaultdict(list)
        self._sets: dict[str, frozenset[int]] = {}

    def _signature(self, sh: frozenset[int]) -> list[int]:
        return [min(((a * x + b) % _PRIME) & _MAX_HASH for x in sh) for a, b in self._perms]

    def _bands(self, sh: frozenset[int]) -> list[tuple[int, tuple[int, ...]]]:
        sig = self._signature(sh)
        return [(i, tuple(sig[i * self.rows : (i + 1) * self.rows])) for i in range(self.bands)]

    def check(self, key: str, text: str) -> tuple[str, float] | None:
        """(key of the kept text it duplicates, similarity), or None: then it is kept too."""
        sh = shingles(text)
        if not sh:  # no words at all: only identical (empty) texts are the same
            sh = frozenset({0})
        keys = self._bands(sh)
        best: tuple[str, float] | None = None
        seen: set[str] = set()
        for band in keys:
            for other in self._buckets.get(band, ()):
                if other in seen:
                    continue
                seen.add(other)
                sim = jaccard(sh, self._sets[other])
                if sim >= self.threshold and (best is None or sim > best[1]):
                    best = (other, sim)
        if best is not None:
            return best
        self._sets[key] = sh
        for band in keys:
            self._buckets[band].append(key)
        return None

    def __len__(self) -> int:
        return len(self._sets)
