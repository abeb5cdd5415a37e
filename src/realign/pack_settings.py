"""`pack.yaml`: the method a criteria pack was written for, and the pack's own prompt texts.

A pack carries its whole method so that `realign run --pack P` (or `--criteria DIR` holding a
`pack.yaml`) reproduces it without flags: the rewrite prompt and answer style, samples,
temperature and selection, the rewrite's output limit, the filter preset, the model, the
retrieval provider and its parameters. Flags given on the command line override every one.

`answer_style: realign-text` is ReAlign's own way of asking: the pack's plain-text templates
(`templates/<key>.txt`, Python `str.format` placeholders such as `{question}`) are sent as they
are with their placeholders filled, and the reply is read as text ("Revised response: …",
"[[A]]"), not as JSON. `realign criteria import-realign` writes such packs.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SETTINGS_FILE = "pack.yaml"
TEMPLATES_DIR = "templates"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# The templates of a `realign-text` pack: key -> what it is. The first four are needed to
# rewrite; the `force` ones are the non-adaptive variants `--force` uses; the judge ones are
# kept with the pack for `realign judge`.
TEMPLATE_KEYS: dict[str, str] = {
    "rewrite_system": "rewrite, system message",
    "rewrite_user": "rewrite, user message ({question}, {response}, {structure})",
    "rewrite_retrieval_system": "rewrite with evidence, system message",
    "rewrite_retrieval_user": "rewrite with evidence, user message (adds {evidence})",
    "rewrite_force_system": "non-adaptive rewrite (--force), system message",
    "rewrite_force_retrieval_system": "non-adaptive rewrite with evidence, system message",
    "judge_readability_system": "pairwise readability judge, system message",
    "judge_readability_user": "pairwise readability judge, user message",
    "judge_factuality_system": "factuality judge against a reference, system message",
    "judge_factuality_user": "factuality judge against a reference, user message",
}
REQUIRED_TEXT_TEMPLATES = (
    "rewrite_system",
    "rewrite_user",
    "rewrite_retrieval_system",
    "rewrite_retrieval_user",
)


class CriteriaError(ValueError):
    """A criteria file or pack is invalid. The message names the file, the field and the fix."""


class PackSettings(BaseModel):
    """`pack.yaml`. Unset fields keep realign's own defaults (one sample, greedy; several
    samples at 0.7; the `default` filter preset; the model and retrieval of the environment)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The rewrite (`RunOptions` fields, see `run_defaults`).
    prompt: str = Field("rewrite", pattern=_NAME_RE.pattern)  # a template in realign/prompts/
    samples: int = Field(1, ge=1, le=16)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    selection: Literal["longest", "first"] = "longest"
    # The model checks each rewrite the rules passed (`realign run --verify`). The embedded
    # model is too small to judge faithfully: with it, only an explicit --verify turns it on.
    verify: bool = False
    answer_style: Literal["json", "realign-text"] = "json"
    max_tokens: int | None = Field(None, ge=16, le=65_536)  # None: realign's budget rule
    # The rest of the method.
    filter_preset: str | None = None  # checked against the filter's presets by the run
    model: str | None = None
    retrieval: str | None = None  # google | serper | local:PATH | none
    retrieve_k: int | None = Field(None, ge=1, le=20)  # evidence items kept per unit
    search_country: str | None = None  # Serper/Google `gl`, e.g. us
    search_language: str | None = None  # Serper/Google `hl`, e.g. en
    # `realign`: search as ReAlign's retrieval.py does (the whole instruction as the query;
    # Serper asked for 10 results, the first `retrieve_k` evidence items kept, knowledge-graph
    # attributes as items of their own).
    search_style: Literal["realign"] | None = None
    # Where an imported pack came from (`import-realign`: path, git commit); provenance only.
    source: dict[str, str] | None = None

    @field_validator("prompt")
    @classmethod
    def _known_prompt(cls, v: str) -> str:
        from realign import prompts

        if not prompts.exists(v):
            raise ValueError(f"no prompt template '{v}' in realign/prompts/")
        return v

    def run_defaults(self, *, local: bool = False) -> dict[str, Any]:
        """The `RunOptions` fields this file sets. `local`: the run uses the embedded model,
        for which `verify: true` is not taken from a pack (only an explicit --verify)."""
        out = self.model_dump(
            include={
                "prompt",
                "samples",
                "temperature",
                "selection",
                "verify",
                "answer_style",
                "max_tokens",
            }
        )
        if local:
            out["verify"] = False
        return out

    def search_options(self) -> dict[str, Any]:
        """The search provider's parameters this file sets (unset ones left out)."""
        d = {
            "country": self.search_country,
            "language": self.search_language,
            "style": self.search_style,
        }
        return {k: v for k, v in d.items() if v is not None}


def load_settings(folder: Path) -> PackSettings:
    """The pack's `pack.yaml`, or the defaults when it has none. Errors name the field and fix."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return PackSettings()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CriteriaError(f"{path}: does not parse as YAML: {problem}") from e
    if not isinstance(data, dict):
        raise CriteriaError(f"{path}: must be a mapping of settings")
    try:
        return PackSettings(**data)
    except ValidationError as e:
        allowed = ", ".join(PackSettings.model_fields)
        msgs = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(file)"
            hint = (
                f" (fix: allowed settings are {allowed})"
                if err["type"] == "extra_forbidden"
                else ""
            )
            msgs.append(f"{path}: setting '{field}': {err['msg']}{hint}")
        raise CriteriaError("\n".join(msgs)) from e


def load_templates(folder: Path, settings: PackSettings) -> dict[str, str]:
    """The pack's `templates/<key>.txt` texts, exactly as written (no stripping: a template is
    sent as it is). A `realign-text` pack must have the rewrite ones; unknown files are an
    error, so a misspelt name never silently falls back to nothing."""
    tdir = folder / TEMPLATES_DIR
    out: dict[str, str] = {}
    if tdir.is_dir():
        for p in sorted(tdir.glob("*.txt")):
            if p.stem not in TEMPLATE_KEYS:
                raise CriteriaError(
                    f"{p}: unknown template '{p.stem}' (fix: name it one of "
                    f"{', '.join(TEMPLATE_KEYS)})"
                )
            out[p.stem] = p.read_text(encoding="utf-8")
    if settings.answer_style == "realign-text":
        missing = [k for k in REQUIRED_TEXT_TEMPLATES if k not in out]
        if missing:
            raise CriteriaError(
                f"{folder / SETTINGS_FILE}: setting 'answer_style': realign-text needs the "
                f"templates {', '.join(f'{TEMPLATES_DIR}/{k}.txt' for k in missing)} "
                f"(fix: add them, or import the pack with `realign criteria import-realign`)"
            )
    return out


def settings_hash(criteria_hash: str, settings: PackSettings, templates: dict[str, str]) -> str:
    """One hash of a pack's whole method (criteria, settings, templates)."""
    h = hashlib.sha256(criteria_hash.encode())
    h.update(yaml.safe_dump(settings.model_dump(), sort_keys=True).encode())
    for k in sorted(templates):
        h.update(f"\0{k}\0{templates[k]}".encode())
    return h.hexdigest()[:16]
