"""The side-by-side diff: words marked as deleted and inserted, escaped for the page."""

from __future__ import annotations

import difflib
import html
import re

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
_MAX_DIFF_TOKENS = 6000  # beyond this, diff lines instead of words (SequenceMatcher is quadratic)


def word_diff(old: str, new: str) -> tuple[str, str]:
    """(old, new) as escaped HTML, deletions in <del> on the left, insertions in <ins> right."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    if len(a) > _MAX_DIFF_TOKENS or len(b) > _MAX_DIFF_TOKENS:
        a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    left: list[str] = []
    right: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        old_part, new_part = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old_part)
            right.append(new_part)
            continue
        if old_part:
            left.append(f"<del>{old_part}</del>")
        if new_part:
            right.append(f"<ins>{new_part}</ins>")
    return "".join(left), "".join(right)
