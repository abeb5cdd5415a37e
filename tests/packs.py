"""A tiny criteria pack written to a temporary folder, for tests that must not depend on the
built-in pack's wording."""

from __future__ import annotations

from pathlib import Path

from realign.criteria import CriteriaPack, load_pack

_TEMPLATE = """---
name: {name}
group: test
description: {desc}
rewrite: {rewrite}
retrieval: {retrieval}
{answer}examples:
{examples}
---
{body}
"""

TYPES = {
    "open_qa": (
        "Questions about facts of the world answered from knowledge.",
        "yes",
        "yes",
        "Start with a direct answer, then one short paragraph of context.",
    ),
    "math_puzzles": (
        "Arithmetic and word problems solved step by step.",
        "yes",
        "no",
        "Restate the facts, compute step by step, end with the final answer.",
    ),
    "story_generation": ("Write a short story or narrative.", "no", "no", "Free form."),
    "planning": ("Make a plan, schedule or itinerary.", "yes", "no", "A numbered plan."),
    "default": ("Anything that fits no other type.", "no", "no", "Free form."),
}
NUMERIC = {"math_puzzles"}  # `answer: numeric`, as in the built-in pack


def write_pack(folder: Path, types: dict[str, tuple[str, str, str, str]] = TYPES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (desc, rewrite, retrieval, body) in types.items():
        examples = "\n".join(f"  - example {i} for {name}" for i in range(8))
        (folder / f"{name}.md").write_text(
            _TEMPLATE.format(
                name=name,
                desc=desc,
                rewrite=rewrite,
                retrieval=retrieval,
                answer="answer: numeric\n" if name in NUMERIC else "",
                examples=examples,
                body=body,
            ),
            encoding="utf-8",
        )
    return folder


def tiny_pack(tmp_path: Path) -> CriteriaPack:
    return load_pack(str(write_pack(tmp_path / "pack")))
