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
    examples:
      - "Who wrote ...?"
    ---
    The format the response should follow (Markdown).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PACK = "realign"
MIN_EXAMPLES = 8


class CriteriaError(ValueError):
    """A criteria file or pack is invalid. The message names the file, the field and the fix."""


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    group: str
    description: str = Field(min_length=10)
    rewrite: bool
    retrieval: bool = False
    note: str = ""  # why, e.g. for `rewrite: no`
    examples: list[str] = Field(min_length=MIN_EXAMPLES)
    format: str = ""  # the Markdown body of the file
    path: str = ""  # where it was loaded from

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
        return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


_FIX_HINTS = {
    "missing": "add the field to the YAML header",
    "extra_forbidden": "remove it or check its spelling (allowed: "
    + ", ".join(f for f in Criterion.model_fields if f not in ("format", "path"))
    + ")",
    "too_short": f"give at least {MIN_EXAMPLES} examples",
    "bool_parsing": "use yes or no",
    "string_pattern_mismatch": "use lower_snake_case",
}


def parse_criterion(text: str, path: str = "<string>") -> Criterion:
    """Parse one criteria file's text. Raises CriteriaError naming the file, field and fix."""
    if not text.startswith("---"):
        raise CriteriaError(f"{path}: the file must start with a YAML header between '---' lines")
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        raise CriteriaError(f"{path}: the YAML header is not closed by a '---' line")
    header_text = parts[0][3:]
    body = parts[1].split("\n", 1)[1] if "\n" in parts[1] else ""
    try:
        header = yaml.safe_load(header_text) or {}
    except yaml.YAMLError as e:
        raise CriteriaError(f"{path}: the YAML header does not parse: {e}") from e
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
            msgs.append(f"{path}: field '{field}': {err['msg']}" + (f" (fix: {hint})" if hint else ""))
        raise CriteriaError("\n".join(msgs)) from e
    stem = Path(path).stem
    if path != "<string>" and stem != crit.name:
        raise CriteriaError(
            f"{path}: field 'name': is '{crit.name}' but the file is named '{stem}.md' "
            f"(fix: rename the file or the field so they match)"
        )
    if not crit.rewrite and not (crit.note or "why" in crit.format.lower()):
        pass  # a reason is recommended, not required: the built-in pack gives one in `note`
    return crit


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

    def __getitem__(self, name: str) -> Criterion:
        return self.criteria[name]

    def __contains__(self, name: object) -> bool:
        return name in self.criteria

    def names(self) -> list[str]:
        return sorted(self.criteria)

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for n in self.names():
            h.update(f"{n}:{self.criteria[n].content_hash}\n".encode())
        return h.hexdigest()[:16]


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
            c = parse_criterion(p.read_text(encoding="utf-8"), str(p))
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


def load_pack(pack: str = DEFAULT_PACK, user_dir: Path | str | None = None) -> CriteriaPack:
    """The built-in pack `pack`, overridden/extended by name with the files of `user_dir`.

    `pack` may also be a folder path, in which case it is the whole pack.
    """
    p = Path(pack)
    if p.is_dir():
        crits, name = load_dir(p), p.name
    else:
        root = builtin_criteria_root() / pack
        if not root.is_dir():
            avail = ", ".join(sorted(d.name for d in builtin_criteria_root().iterdir() if d.is_dir()))
            raise CriteriaError(f"no built-in criteria pack named '{pack}' (available: {avail})")
        crits, name = load_dir(root), pack
    if user_dir is not None:
        crits = {**crits, **load_dir(Path(user_dir))}
    if not crits:
        raise CriteriaError(f"criteria pack '{name}' has no criteria files")
    return CriteriaPack(name=name, criteria=crits)
