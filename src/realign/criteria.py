"""Criteria packs: one human-editable Markdown file with a YAML header per task type.

A pack is a folder of `<name>.md` files. The built-in packs live in the repository's
`criteria/` folder (`criteria/realign` is the default ReAlign pack, `criteria/wrap` the WRAP
rephrasing styles); a user's `--criteria DIR` overrides or extends the chosen pack by name.

File layout::

    ---
    name: open_qa
    group: question_answering
    description: One line the classifier reads.
    rewrite: true
    retrieval: true
    answer: numeric    # optional (default text): the answer is a number worth checking
    examples:
      - "Who wrote ...?"
    ---
    The format the response should follow (Markdown).

A pack may also hold `pack.yaml` (`pack_settings.py`): the method the pack was written for (its
rewrite prompt and answer style, samples, temperature, selection, filter preset, model,
retrieval), used as the defaults of `realign run` with that pack; flags override them.
`realign-paper` and packs made by `realign criteria import-realign` use it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from realign.pack_settings import (  # re-exported: `pack.yaml` lives there
    SETTINGS_FILE,
    CriteriaError,
    PackSettings,
    load_settings,
    load_templates,
    settings_hash,
)

DEFAULT_PACK = "realign"
MIN_EXAMPLES = 8
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE.pattern)
    group: str
    description: str = Field(min_length=10)
    rewrite: bool
    retrieval: bool = False
    # `numeric`: the answer is a number (math, science problems). The filter then requires the
    # rewrite to keep the original's last number, and the reference metrics compare final
    # answers as numbers.
    answer: Literal["text", "numeric"] = "text"
    note: str = ""  # why, e.g. for `rewrite: no`
    examples: list[str] = Field(min_length=MIN_EXAMPLES)
    format: str = ""  # the Markdown body of the file
    path: str = ""  # where it was loaded from

    @field_validator("description")
    @classmethod
    def _one_line_description(cls, v: str) -> str:
        # The classifier prompt lists one description per line; a line break would split it.
        if "\n" in v.strip():
            raise ValueError("description must be a single line")
        return v.strip()

    @field_validator("examples")
    @classmethod
    def _non_empty_examples(cls, v: list[str]) -> list[str]:
        if any(not e.strip() for e in v):
            raise ValueError("examples must not contain empty strings")
        return v

    @property
    def content_hash(self) -> str:
        """Hash of everything that changes what the LLM is asked (not the path)."""
        data = self.model_dump(exclude={"path"})
        if data["answer"] == "text":
            del data["answer"]  # the default: hashes stay what they were before the field
        return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


_FIX_HINTS = {
    "missing": "add the field to the YAML header",
    "extra_forbidden": "remove it or check its spelling (allowed: "
    + ", ".join(f for f in Criterion.model_fields if f not in ("format", "path"))
    + ")",
    "too_short": f"give at least {MIN_EXAMPLES} examples",
    "bool_parsing": "use yes or no",
    "string_pattern_mismatch": "use lower_snake_case",
    "string_too_short": "write a longer value",
    "string_type": "quote the value so it is text",
    "list_type": "give a YAML list, one '- item' per line",
    "literal_error": "use one of the values listed",
}


def _split_front_matter(text: str, path: str) -> tuple[str, str]:
    """(YAML header, Markdown body). The header closes at the first line that is exactly
    `---`; indented lines (e.g. inside a block-scalar example) never close it."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n")  # same hash on every platform
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        raise CriteriaError(f"{path}: the file must start with a YAML header between '---' lines")
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    raise CriteriaError(f"{path}: the YAML header is not closed by a '---' line")


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A one-line description of a YAML error, with the line number in the file."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    # The header starts on the file's second line, after the opening '---'.
    where = f" at line {mark.line + 2}, column {mark.column + 1}" if mark is not None else ""
    ctx, ctx_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if ctx and ctx_mark is not None:
        problem += f" ({ctx} started at line {ctx_mark.line + 2}, column {ctx_mark.column + 1})"
    return (
        f"the YAML header does not parse{where}: {problem} "
        f"(fix: check the quoting and indentation there; quote values that contain ': ' or '#')"
    )


def _safe_load(text: str) -> Any:
    """`yaml.safe_load`, by libyaml's parser when PyYAML has it (~5x faster: a run parses
    every criterion of its pack at start); errors come from the pure-Python parser, whose
    messages and marks the error reports below were written for."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def parse_criterion(text: str, path: str = "<string>") -> Criterion:
    """Parse one criteria file's text. Raises CriteriaError naming the file, field and fix."""
    header_text, body = _split_front_matter(text, path)
    try:
        header = _safe_load(header_text) or {}
    except yaml.YAMLError as e:
        raise CriteriaError(f"{path}: {_yaml_problem(e)}") from e
    if not isinstance(header, dict):
        raise CriteriaError(f"{path}: the YAML header must be a mapping of fields")
    if "format" in header or "path" in header:
        raise CriteriaError(f"{path}: field 'format' belongs in the Markdown body, not the header")
    try:
        crit = Criterion(**header, format=body.strip(), path=path)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(header)"
            hint = _FIX_HINTS.get(err["type"], "")
            msgs.append(
                f"{path}: field '{field}': {err['msg']}" + (f" (fix: {hint})" if hint else "")
            )
        raise CriteriaError("\n".join(msgs)) from e
    stem = Path(path).stem
    if path != "<string>" and stem != crit.name:
        raise CriteriaError(
            f"{path}: field 'name': is '{crit.name}' but the file is named '{stem}.md' "
            f"(fix: rename the file or the field so they match)"
        )
    if crit.rewrite and not crit.format:
        raise CriteriaError(
            f"{path}: field 'format': `rewrite: yes` needs the format to follow "
            f"(fix: write it as Markdown below the closing '---', or set `rewrite: no`)"
        )
    return crit


def criterion_warnings(crit: Criterion) -> list[str]:
    """Advice that does not make a file invalid: shown by `realign criteria validate`."""
    where = crit.path or crit.name
    out: list[str] = []
    if not crit.rewrite and not crit.note.strip():
        out.append(f"{where}: field 'note': `rewrite: no` without a reason (fix: say why in note)")
    if (
        "TODO" in crit.description
        or any("TODO" in e for e in crit.examples)
        or "TODO" in crit.format
    ):
        out.append(
            f"{where}: still has TODO placeholders from `realign criteria new` (fix: edit them)"
        )
    seen: set[str] = set()
    for ex in crit.examples:
        key = " ".join(ex.lower().split())
        if key in seen:
            out.append(f"{where}: field 'examples': duplicate example {ex[:60]!r} (fix: remove it)")
        seen.add(key)
    return out


def dump_criterion(crit: Criterion) -> str:
    """The file text for a criterion (the inverse of `parse_criterion`)."""
    header = crit.model_dump(exclude={"format", "path"})
    if not header["note"]:
        del header["note"]
    if header["answer"] == "text":
        del header["answer"]
    text = yaml.dump(header, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=10_000)
    return f"---\n{text}---\n{crit.format.strip()}\n"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as `|` blocks so examples with inputs stay readable."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def _bool_representer(dumper: yaml.SafeDumper, data: bool) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:bool", "yes" if data else "no")


_BlockDumper.add_representer(str, _str_representer)
_BlockDumper.add_representer(bool, _bool_representer)

TEMPLATE_FILE = "_template.md"  # in the built-in criteria root, used by `realign criteria new`


def new_criterion_text(name: str) -> str:
    """A valid starter file for a new task type, from the template in the criteria root."""
    if not _NAME_RE.fullmatch(name):
        raise CriteriaError(
            f"'{name}' is not a valid name (fix: use lower_snake_case, e.g. my_task)"
        )
    template = (builtin_criteria_root() / TEMPLATE_FILE).read_text(encoding="utf-8")
    return template.replace("{{ name }}", name)


def builtin_criteria_root() -> Path:
    """The folder holding the built-in packs (installed copy first, then the source checkout)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_criteria", here.parents[1] / "criteria"):
        if cand.is_dir():
            return cand
    raise CriteriaError("the built-in criteria folder is missing from this installation")


class CriteriaPack(BaseModel):
    name: str
    criteria: dict[str, Criterion]
    settings: PackSettings = Field(default_factory=PackSettings)
    # The pack's own prompt texts (`templates/*.txt`, ReAlign's answer style), by key.
    templates: dict[str, str] = Field(default_factory=dict)
    folder: str | None = None  # the --criteria folder, when the run was given one

    @property
    def pack_hash(self) -> str:
        """Hash of the whole method: criteria, `pack.yaml` settings and the pack's templates."""
        return settings_hash(self.content_hash, self.settings, self.templates)

    def __getitem__(self, name: str) -> Criterion:
        return self.criteria[name]

    def __contains__(self, name: object) -> bool:
        return name in self.criteria

    def names(self) -> list[str]:
        return sorted(self.criteria)

    @property
    def content_hash(self) -> str:
        return content_hash_of(self.criteria)

    @property
    def classifier_hash(self) -> str:
        """Hash of what a classifier learns from (names, descriptions, examples), so packs that
        differ only in formats or settings (`realign` and `realign-paper`) share one trained
        classifier."""
        h = hashlib.sha256()
        for n in sorted(self.criteria):
            c = self.criteria[n]
            h.update(yaml.safe_dump([n, c.description, c.examples]).encode())
        return h.hexdigest()[:16]


def content_hash_of(criteria: dict[str, Criterion]) -> str:
    """Hash of a set of criteria (independent of where the files live)."""
    h = hashlib.sha256()
    for n in sorted(criteria):
        h.update(f"{n}:{criteria[n].content_hash}\n".encode())
    return h.hexdigest()[:16]


def numeric_answer(task_type: str | None, pack: CriteriaPack | None = None) -> bool:
    """Whether the criterion of `task_type` says `answer: numeric`: the one in `pack`, else
    (no pack, or a type it lacks) the one in the built-in default pack."""
    if task_type is None:
        return False
    if pack is not None and task_type in pack:
        return pack[task_type].answer == "numeric"
    return task_type in _builtin_numeric_types()


@functools.cache
def _builtin_numeric_types() -> frozenset[str]:
    # Read once per process: the filter and the metrics ask for every unit.
    crits = load_dir(pack_folder(DEFAULT_PACK))
    return frozenset(n for n, c in crits.items() if c.answer == "numeric")


def load_dir(folder: Path) -> dict[str, Criterion]:
    """Load every `*.md` in a folder; collect all errors before raising."""
    if not folder.is_dir():
        raise CriteriaError(f"{folder}: not a folder of criteria files")
    out: dict[str, Criterion] = {}
    errors: list[str] = []
    for p in sorted(folder.glob("*.md")):
        if p.name.lower() == "readme.md":
            continue
        try:
            c = parse_criterion(p.read_text(encoding="utf-8-sig"), str(p))
        except CriteriaError as e:
            errors.append(str(e))
            continue
        except UnicodeDecodeError:
            errors.append(f"{p}: not UTF-8 text (fix: save the file as UTF-8)")
            continue
        out[c.name] = c
    if errors:
        raise CriteriaError("\n".join(errors))
    return out


def builtin_pack_names() -> list[str]:
    return sorted(d.name for d in builtin_criteria_root().iterdir() if d.is_dir())


def _is_explicit_path(pack: str | Path) -> bool:
    """`./realign`, `packs/mine`, `/abs/pack`: a path, never a built-in pack name."""
    s = str(pack)
    return isinstance(pack, Path) or s.startswith(".") or "/" in s or os.sep in s


def pack_folder(pack: str | Path) -> Path:
    """The folder of a pack: the built-in pack of that name, else an existing folder.

    A built-in name wins over a same-named folder in the working directory (running from a
    clone's parent, `realign` is the clone); write `./realign` to mean the folder.
    """
    root = builtin_criteria_root() / str(pack)
    if not _is_explicit_path(pack) and root.is_dir():
        return root
    p = Path(pack)
    if p.is_dir():
        return p
    raise CriteriaError(
        f"no built-in criteria pack named '{pack}' and no such folder "
        f"(available: {', '.join(builtin_pack_names())}; write ./NAME for a folder)"
    )


def load_pack(pack: str = DEFAULT_PACK, user_dir: Path | str | None = None) -> CriteriaPack:
    """The built-in pack `pack`, overridden/extended by name with the files of `user_dir`.

    `pack` may also be a folder path, in which case it is the whole pack.
    """
    folder = pack_folder(pack)
    builtin = folder.parent == builtin_criteria_root()
    crits, name = load_dir(folder), (pack if builtin else folder.name)
    if user_dir is not None:
        crits = {**crits, **load_dir(Path(user_dir))}
    if not crits:
        raise CriteriaError(f"criteria pack '{name}' has no criteria files")
    # A --criteria folder with its own pack.yaml (an imported pack) brings its whole method.
    source = folder
    if user_dir is not None and (Path(user_dir) / SETTINGS_FILE).is_file():
        source = Path(user_dir)
    settings = load_settings(source)
    return CriteriaPack(
        name=name,
        criteria=crits,
        settings=settings,
        templates=load_templates(source, settings),
        folder=str(user_dir) if user_dir is not None else None,
    )
