"""A small SYNTHETIC ReAlign checkout for the import tests.

It has the file shapes of GAIR-NLP/ReAlign (module-level literal assignments in
`code/constant.py`, argparse defaults in `code/reformat.py`, the per-dataset selection in
`code/rewrite_data_selection.py`, the Serper wrapper's gl/hl) but none of its text: every
description, format and prompt below is placeholder text written for these tests.
"""

from __future__ import annotations

from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"

DESCRIPTIONS = {
    "open_qa": "Placeholder: a question about the world, answered from knowledge.",
    "math_puzzles": "Placeholder: a numeric puzzle worked out in steps.",
    "story_generation": "Placeholder: a short tale about the given prompt.",
    "exam_problem_solving_tutor": "Placeholder: a school exam item to solve.",
    "widget_sorting": "Placeholder: put the listed widgets in order.",
    "default": "Placeholder: whatever no other type covers.",
}
# Formats with what a verbatim copy must survive: several lines, quotes, braces, a `---` line,
# trailing spaces, leading/trailing blank lines (whitespace around the text aside).
STRUCTURES = {
    "open_qa": "PH-FORMAT-QA: Open with one line of context.\nThen the answer, "
    'then "why" in a list.\n---\nClose with {one} remark.  ',
    "math_puzzles": "\nPH-FORMAT-MATH: Restate, list each step, end with 'Result: N'.\n",
    "exam_problem_solving_tutor": "PH-FORMAT-EXAM: name the option, then justify it.",
    "widget_sorting": "PH-FORMAT-SORT: the ordered list first, then the rule used.",
    "default": "PH-FORMAT-DEFAULT: a paragraph, then a list, then a wrap-up.",
}
REWRITE = ["open_qa", "math_puzzles", "exam_problem_solving_tutor", "widget_sorting"]
RAG = ["open_qa"]
GROUPS = {
    "Conversation": ["open_qa"],
    "Specialized Educational Dialog": ["math_puzzles", "exam_problem_solving_tutor"],
    "Generation": ["story_generation"],
    "Classification": ["widget_sorting"],
    "Others": ["default"],
}
PROMPTS = {
    "REWRITING_SYSTEM_PROMPT": "\nPH-SYS: reshape the reply to the format; copy it if the "
    'format is wrong.\nWrite "Reasoning: <why>" then "Revised response: <text>".\n',
    "REWRITING_USER_PROMPT": "\nPH-USER\n<<Q>>\n{question}\n<<R>>\n{response}\n<<F>>\n"
    "{structure}\n",
    "REWRITING_RETRIEVAL_SYSTEM_PROMPT": "\nPH-SYS-EVIDENCE: as above, and weigh the evidence."
    '\nWrite "Reasoning: <why>" then "Revised response: <text>".\n',
    "REWRITING_RETRIEVAL_USER_PROMPT": "\nPH-USER-EVIDENCE\n<<Q>>\n{question}\n<<R>>\n"
    "{response}\n<<F>>\n{structure}\n<<E>>\n{evidence}\n",
    "NON_ADAPTIVITTY_REWRITING_SYSTEM_PROMPT": "\nPH-SYS-FORCE: always reshape.\n",
    "NON_ADAPTIVITTY_REWRITING_RETRIEVAL_SYSTEM_PROMPT": "\nPH-SYS-FORCE-EVIDENCE: always.\n",
    "READABILITY_EVALUATION_SYSTEM_PROMPT": "PH-JUDGE-READ: answer [[A]], [[B]] or [[C]].",
    "READABILITY_EVALUATION_USER_PROMPT": "Q {question}\nA {answer_a}\nB {answer_b}",
    "FACTUALITY_EVALUATION_SYSTEM_PROMPT": "PH-JUDGE-FACT: rate as [[N]].",
    "FACTUALITY_EVALUATION_USER_PROMPT": "Q {question}\nREF {ref_answer}\nANS {answer}",
}


def _py(value: object) -> str:
    return repr(value)


def constant_py(prompts: dict[str, str] | None = None, rename: dict[str, str] | None = None) -> str:
    rename = rename or {}

    def name(n: str) -> str:
        return rename.get(n, n)

    lines = [
        "import os  # a real module would import things; nothing here is run",
        f"{name('TASK_DESCRIPTION')} = {{",
        *(f"    {k!r}: {v!r}," for k, v in DESCRIPTIONS.items()),
        "}",
        f"{name('RAG_TASKS')} = {_py(RAG)}",
        f"{name('REWRITE_TASK')} = [",
        *(f"    {t!r}," for t in REWRITE),
        "]",
    ]
    for key, text in (prompts or PROMPTS).items():
        lines.append(f"{name(key)}: str = '''{text}'''")
    lines.append(f"{name('STRUCTURE')}: dict = {{")
    for k, v in STRUCTURES.items():
        lines.append(f"    {k!r}: '''{v}''',")
    lines.append("}")
    lines.append(f"{name('task_group')} = {_py(GROUPS)}")
    return "\n".join(lines) + "\n"


REFORMAT = """import argparse

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--input_data_path', type=str)
    parser.add_argument('--top_k', type=int, default=2)
    parser.add_argument('--model', type=str, default='placeholder-model-1')
    parser.add_argument('--temperature', type=float, default=0.3)
    parser.add_argument('--top_p', type=float, default=1)
    parser.add_argument('--target_length', type=int, default=2048)
    args = parser.parse_args()
"""

SELECTION = """def alpaca_overall_selection(q, o, r, tok):
    return True

def no_robots_overall_selection(i, q, o, r, tok, c):
    return True

def main():
    for d in []:
        # if no_robots_overall_selection(i, q, o, r, tok, c):
        if alpaca_overall_selection(q, o, r, tok):
            pass
"""

SERPER = """class Wrapper:
    def __init__(self):
        self.gl = "gb"
        self.hl = "en"
"""


def write_checkout(
    root: Path,
    *,
    constant: str | None = None,
    reformat: str = REFORMAT,
    git: bool = True,
) -> Path:
    code = root / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "constant.py").write_text(constant or constant_py(), encoding="utf-8")
    (code / "reformat.py").write_text(reformat, encoding="utf-8")
    (code / "rewrite_data_selection.py").write_text(SELECTION, encoding="utf-8")
    (code / "google_serper.py").write_text(SERPER, encoding="utf-8")
    if git:
        (root / ".git" / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (root / ".git" / "refs" / "heads" / "main").write_text(COMMIT + "\n")
    return root
