"""`realign criteria import-realign PATH -o DIR`: a criteria pack from the user's own ReAlign
checkout (GAIR-NLP/ReAlign), with ReAlign's texts exactly.

realign ships no text of ReAlign's (its repository has no licence); a user who has a checkout
can turn it into a pack. The checkout is read with `ast`, never imported or executed: only
module-level assignments of literals (strings, f-strings of plain names, dicts, lists) and
`add_argument(..., default=...)` calls are looked at.

What is read (`code/` first, then the repository root, where older checkouts keep them):
- `constant.py`: `TASK_DESCRIPTION`, `STRUCTURE`, `REWRITE_TASK`, `RAG_TASKS`, `task_group`,
  the rewrite prompts (`REWRITING_*`, the non-adaptive `NON_ADAPTIVITTY_*` used with `--force`)
  and the judge prompts (`READABILITY_EVALUATION_*`, `FACTUALITY_EVALUATION_*`);
- `reformat.py` (older: `rewrite.py`): the defaults of `--top_k`, `--temperature`,
  `--target_length` and `--model`;
- `rewrite_data_selection.py`: which `*_overall_selection` its `main` applies (the filter preset);
- `google_serper.py`, when present: the `gl` / `hl` search parameters.
"""

from __future__ import annotations

import ast
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from realign.criteria import (
    MIN_EXAMPLES,
    CriteriaError,
    Criterion,
    dump_criterion,
    load_dir,
    pack_folder,
)
from realign.pack_settings import SETTINGS_FILE, TEMPLATES_DIR

CONSTANT_NAMES = ("TASK_DESCRIPTION", "STRUCTURE", "REWRITE_TASK", "RAG_TASKS", "task_group")
# realign template key -> the name in constant.py, and the placeholders its text must have.
TEMPLATE_SOURCES: dict[str, tuple[str, frozenset[str]]] = {
    "rewrite_system": ("REWRITING_SYSTEM_PROMPT", frozenset()),
    "rewrite_user": ("REWRITING_USER_PROMPT", frozenset({"question", "response", "structure"})),
    "rewrite_retrieval_system": ("REWRITING_RETRIEVAL_SYSTEM_PROMPT", frozenset()),
    "rewrite_retrieval_user": (
        "REWRITING_RETRIEVAL_USER_PROMPT",
        frozenset({"question", "response", "structure", "evidence"}),
    ),
    "rewrite_force_system": ("NON_ADAPTIVITTY_REWRITING_SYSTEM_PROMPT", frozenset()),
    "rewrite_force_retrieval_system": (
        "NON_ADAPTIVITTY_REWRITING_RETRIEVAL_SYSTEM_PROMPT",
        frozenset(),
    ),
    "judge_readability_system": ("READABILITY_EVALUATION_SYSTEM_PROMPT", frozenset()),
    "judge_readability_user": (
        "READABILITY_EVALUATION_USER_PROMPT",
        frozenset({"question", "answer_a", "answer_b"}),
    ),
    "judge_factuality_system": ("FACTUALITY_EVALUATION_SYSTEM_PROMPT", frozenset()),
    "judge_factuality_user": (
        "FACTUALITY_EVALUATION_USER_PROMPT",
        frozenset({"question", "ref_answer", "answer"}),
    ),
}
# reformat.py argument -> pack.yaml setting
ARGUMENTS = {"--top_k": "samples", "--temperature": "temperature", "--target_length": "max_tokens"}
# rewrite_data_selection.py's `<dataset>_overall_selection` -> realign's filter preset
SELECTION_PRESETS = {
    "open_platypus": "open-platypus",
    "alpaca": "alpaca",
    "no_robots": "no-robots",
}


class ImportProblem(CriteriaError):
    """The folder is not a ReAlign checkout realign can read; the message says what is missing."""


@dataclass
class Imported:
    criteria: list[Criterion]
    templates: dict[str, str]
    settings: dict[str, Any]
    model: str | None
    commit: str | None
    warnings: list[str] = field(default_factory=list)


def find_file(root: Path, *names: str) -> Path:
    for name in names:
        for cand in (root / "code" / name, root / name):
            if cand.is_file():
                return cand
    where = " or ".join(f"code/{n}" for n in names)
    raise ImportProblem(f"{root}: not a ReAlign checkout: {where} not found")


def _literal(node: ast.AST, names: dict[str, Any], where: str) -> Any:
    """The value of a literal expression, without evaluating code. An f-string of plain names
    becomes a `str.format` template (`f"{question}"` -> `"{question}"`)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value).replace("{", "{{").replace("}", "}}"))
            elif isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name):
                parts.append("{" + v.value.id + "}")
            else:
                raise ImportProblem(f"{where}: an f-string part that is not a plain name")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left, names, where) + _literal(node.right, names, where)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ImportProblem(f"{where}: a `**` in a dict literal")
        return {
            _literal(k, names, where): _literal(v, names, where)
            for k, v in zip(node.keys, node.values, strict=True)
            if k is not None
        }
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(e, names, where) for e in node.elts]
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    raise ImportProblem(f"{where}: not a literal ({type(node).__name__}) and not run by realign")


def module_constants(path: Path) -> dict[str, Any]:
    """Module-level `NAME = literal` / `NAME: type = literal` assignments of a Python file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as e:
        raise ImportProblem(f"{path}: does not parse as Python: {e}") from e
    out: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                out[target.id] = _literal(value, out, f"{path}: {target.id}")
            except ImportProblem:
                continue  # not a literal: reported only if it is one of the names needed
    return out


def argument_defaults(path: Path) -> dict[str, Any]:
    """`parser.add_argument('--x', ..., default=V)` -> {'--x': V} (literal defaults only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: dict[str, Any] = {}
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            continue
        for kw in node.keywords:
            if kw.arg == "default" and isinstance(kw.value, ast.Constant):
                out[str(node.args[0].value)] = kw.value.value
    return out


def active_selection(path: Path) -> str | None:
    """The `<dataset>_overall_selection` function `main` calls (the others are commented out
    in ReAlign's script: the user uncomments the one for their dataset)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    for node in ast.walk(mains[0]) if mains else ():
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name.endswith("_overall_selection"):
                return name.removesuffix("_overall_selection")
    return None


def git_commit(root: Path) -> str | None:
    """The checkout's HEAD commit, read from `.git` without running git."""
    git = root / ".git"
    if git.is_file():  # a worktree or submodule: "gitdir: PATH"
        text = git.read_text(encoding="utf-8").strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.removeprefix("gitdir:").strip()).resolve()
    head = git / "HEAD"
    if not head.is_file():
        return None
    ref = head.read_text(encoding="utf-8").strip()
    if not ref.startswith("ref:"):
        return ref or None
    ref = ref.removeprefix("ref:").strip()
    # A linked worktree keeps HEAD in its own gitdir and the refs in the common dir that its
    # `commondir` file names (relative to the gitdir); `git clone` and `git gc` pack refs there.
    bases = [git]
    if (git / "commondir").is_file():
        bases.append((git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve())
    for base in bases:
        if (base / ref).is_file():
            return (base / ref).read_text(encoding="utf-8").strip()
    for base in bases:
        packed = base / "packed-refs"
        if not packed.is_file():
            continue
        for line in packed.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref:
                return sha
    return None


def placeholders(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _snake(name: str) -> str:
    return "_".join(name.lower().replace("-", " ").split())


def _examples(name: str, builtin: dict[str, Criterion]) -> tuple[list[str], str | None]:
    """Classifier examples: ReAlign has none, so the built-in pack's for the same type."""
    if name in builtin:
        return list(builtin[name].examples), None
    todo = [f"TODO: an example request of type {name} ({i + 1})" for i in range(MIN_EXAMPLES)]
    return todo, f"{name}: not a built-in type, so it has placeholder examples (write real ones)"


def read_checkout(root: Path) -> Imported:
    """Everything the pack needs from the checkout at `root`; ImportProblem names what is
    missing (a file, or a name that is absent or not a literal)."""
    if not root.is_dir():
        raise ImportProblem(f"{root}: not a folder (give the path of a ReAlign checkout)")
    constant = find_file(root, "constant.py")
    consts = module_constants(constant)
    wanted = [*CONSTANT_NAMES, *(src for src, _ in TEMPLATE_SOURCES.values())]
    missing = [n for n in wanted if n not in consts]
    if missing:
        raise ImportProblem(
            f"{constant}: no literal assignment of {', '.join(missing)} (a name ReAlign's "
            f"constant.py defines; renamed, or not a ReAlign checkout?)"
        )
    tasks, structure = consts["TASK_DESCRIPTION"], consts["STRUCTURE"]
    rewrite, rag, groups = (
        set(consts["REWRITE_TASK"]),
        set(consts["RAG_TASKS"]),
        consts["task_group"],
    )
    if (
        not isinstance(tasks, dict)
        or not isinstance(structure, dict)
        or not isinstance(groups, dict)
    ):
        raise ImportProblem(f"{constant}: TASK_DESCRIPTION, STRUCTURE and task_group must be dicts")
    unknown = sorted((rewrite | rag | set(structure)) - set(tasks))
    if unknown:
        raise ImportProblem(f"{constant}: {', '.join(unknown)} not in TASK_DESCRIPTION")
    group_of = {t: _snake(g) for g, members in groups.items() for t in members}
    warnings: list[str] = []
    crits: list[Criterion] = []
    builtin = load_dir(pack_folder("realign"))
    for name, description in tasks.items():
        if name in rewrite and not str(structure.get(name, "")).strip():
            raise ImportProblem(
                f"{constant}: STRUCTURE has no format for '{name}' (in REWRITE_TASK)"
            )
        examples, warning = _examples(name, builtin)
        if warning:
            warnings.append(warning)
        try:
            crit = Criterion(
                name=name,
                group=group_of.get(name, "others"),
                description=" ".join(str(description).split()),
                rewrite=name in rewrite,
                retrieval=name in rag,
                note="" if name in rewrite else "Not in ReAlign's REWRITE_TASK: kept as it is.",
                examples=examples,
                format=str(structure.get(name, "")),
            )
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ImportProblem(f"{constant}: task type {name!r}: {problems}") from e
        crits.append(crit)
    templates: dict[str, str] = {}
    for key, (src, needed) in TEMPLATE_SOURCES.items():
        text = consts[src]
        if not isinstance(text, str):
            raise ImportProblem(f"{constant}: {src} is not a string")
        if not needed <= placeholders(text):
            lack = ", ".join("{" + p + "}" for p in sorted(needed - placeholders(text)))
            raise ImportProblem(f"{constant}: {src} lacks the placeholder(s) {lack}")
        templates[key] = text
    return Imported(crits, templates, *_run_settings(root, warnings), git_commit(root), warnings)


def _run_settings(root: Path, warnings: list[str]) -> tuple[dict[str, Any], str | None]:
    script = find_file(root, "reformat.py", "rewrite.py")
    defaults = argument_defaults(script)
    lack = [a for a in ARGUMENTS if a not in defaults]
    if lack:
        raise ImportProblem(f"{script}: no literal default for {', '.join(lack)}")
    settings: dict[str, Any] = {"answer_style": "realign-text"}
    settings.update({ARGUMENTS[a]: defaults[a] for a in ARGUMENTS})
    settings["selection"] = "longest"  # ReAlign keeps the candidate with the most tokens
    top_p = defaults.get("--top_p")
    if isinstance(top_p, int | float) and top_p != 1:  # realign sends none: the provider's 1
        warnings.append(f"{script}: --top_p defaults to {top_p}; realign sends no top_p (1)")
    selection = find_file(root, "rewrite_data_selection.py")
    active = active_selection(selection)
    if active in SELECTION_PRESETS:
        settings["filter_preset"] = SELECTION_PRESETS[active]
    else:
        warnings.append(f"{selection}: no known *_overall_selection in main: filter preset unset")
    settings.update({"retrieve_k": 5, "search_style": "realign"})
    settings["search_country"], settings["search_language"] = _search_locale(root)
    return settings, defaults.get("--model")


def _search_locale(root: Path) -> tuple[str, str]:
    """`self.gl = …` / `self.hl = …` of ReAlign's Serper wrapper; us/en when it is absent."""
    try:
        path = find_file(root, "google_serper.py")
    except ImportProblem:
        return "us", "en"
    found = {"gl": "us", "hl": "en"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Attribute)
            and node.targets[0].attr in found
            and isinstance(node.value, ast.Constant)
        ):
            found[node.targets[0].attr] = str(node.value.value)
    return found["gl"], found["hl"]


def write_pack(imported: Imported, source: Path, out: Path) -> list[Path]:
    """Write the pack into `out` (created; files of the same names replaced). Returns the
    files written. The templates are written byte for byte as the checkout has them."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for crit in imported.criteria:
        path = out / f"{crit.name}.md"
        path.write_text(dump_criterion(crit), encoding="utf-8")
        written.append(path)
    tdir = out / TEMPLATES_DIR
    tdir.mkdir(exist_ok=True)
    for key, text in imported.templates.items():
        path = tdir / f"{key}.txt"
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    settings = dict(imported.settings)
    settings["source"] = {"path": str(source.resolve())}
    if imported.commit:
        settings["source"]["commit"] = imported.commit
    head = [
        f"# Imported by `realign criteria import-realign` from {source.resolve()}",
        f"# (commit {imported.commit or 'unknown: not a git checkout'}). Flags override these.",
    ]
    if imported.model:
        head += [
            "# ReAlign's default model; uncomment the next line to use it:",
            f"# model: {imported.model}",
        ]
    text = "\n".join(head) + "\n" + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
    path = out / SETTINGS_FILE
    path.write_text(text, encoding="utf-8")
    written.append(path)
    return written
