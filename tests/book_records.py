"""What the tests comparing `--engine ray` with the local engine share: the input (alpaca
records about books) and the outputs compared without the provenance fields two equivalent
runs do not share."""

from __future__ import annotations

import json
import re


def alpaca(n: int) -> list[str]:
    """`n` alpaca records as JSON lines, ids `r0`… in order."""
    return [
        json.dumps(
            {
                "instruction": f"Question number {i}: who wrote book {i}?",
                "input": "",
                # Over 8 words: a short answer would be held to its words by the filter.
                "output": f"Author {i} wrote book {i} in the year {1900 + i}.",
                "id": f"r{i}",
            }
        )
        for i in range(n)
    ]


def without_time(text: str) -> str:
    """Provenance carries the wall-clock time a record was done and the command line (`-o`,
    `--engine`, `--address` differ): blanked, the rest of two equivalent runs is byte-equal."""
    return re.sub(r'"(time|command)": ?"(?:[^"\\]|\\.)*"', r'"\1": ""', text)
