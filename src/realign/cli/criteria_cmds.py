"""`realign criteria list | show | validate | new`: inspect, check and create criteria files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from realign.cli import common, options

if TYPE_CHECKING:
    from rich.console import Console

    from realign.criteria import CriteriaPack, Criterion, PackSettings

GROUP_HELP = """Criteria packs: one Markdown file per task type, with a YAML header.

Each file says how the classifier recognises the task type (`description`, `examples`), whether
responses of that type are rewritten (`rewrite`) and grounded with web evidence (`retrieval`),
and, in its Markdown body, the format a rewritten response must follow.

The built-in packs are `realign` (the 46 ReAlign task types, the default), `realign-paper` (the
same types with ReAlign's own formats, rewrite prompt and settings, to reproduce the paper) and
`wrap` (the four WRAP rephrasing styles). A pack's `pack.yaml` sets its run defaults. Your own folder, passed as `--criteria DIR`, overrides built-in files
with the same name and adds new task types.

Examples:

```
realign criteria list
realign criteria show how_to_generation
realign criteria new open_qa --dir my_criteria   # copy the built-in one
realign criteria validate my_criteria
realign run data.json -o out.json --criteria my_criteria
```
"""

LIST_HELP = """List the task types of a pack: name, group, rewrite, retrieval, number of examples and
the one-line description the classifier reads.

Examples:

```
realign criteria list
realign criteria list --pack wrap
realign criteria list --criteria my_criteria   # the pack + your overrides
realign criteria list --json > types.json
```
"""

SHOW_HELP = """Show one criterion in full: its fields, its examples and the format body.

Examples:

```
realign criteria show math_puzzles
realign criteria show qa --pack wrap
realign criteria show my_task --criteria my_criteria --raw  # as stored
```
"""

VALIDATE_HELP = """Check every criteria file of a folder (default: the built-in `realign` pack).

Exits with status 1 and lists every error with its file, field and fix; on success prints the
number of files and the pack hash (which changes whenever anything the LLM is asked changes).
Warnings (e.g. `rewrite: no` without a `note`, leftover TODO placeholders) do not fail the check
unless `--strict` is given.

Examples:

```
realign criteria validate
realign criteria validate wrap
realign criteria validate my_criteria --strict
realign criteria validate my_criteria/my_task.md
```
"""

NEW_HELP = """Write a new criteria file that already validates, for you to edit.

By default the file is a template full of TODO notes. With `--from EXISTING` it starts as a copy
of an existing task type (from the pack and `--criteria`); when NAME is itself a built-in task
type, the copy of it is used automatically, which is how you override a built-in criterion.
An existing file is never overwritten.

Then edit the file, check it with `realign criteria validate DIR`, and use it with
`realign run ... --criteria DIR`.

Examples:

```
realign criteria new legal_drafting --dir my_criteria
realign criteria new open_qa --dir my_criteria    # overrides the built-in
realign criteria new recipe_writing --from how_to_generation
```
"""


WIDE_TABLE = 120  # terminal columns from which the description gets its own column
PIPED_WIDTH = 10_000  # `criteria list` into a pipe or file: wide enough for any row

NEW_DIR = typer.Option(
    Path("my_criteria"), "--dir", help="Folder to write NAME.md into (created if needed)."
)


def _console(stderr: bool = False) -> Console:
    from realign.cli.console import make_console

    return make_console(stderr=stderr, highlight=False, soft_wrap=False)


def _load(pack: str, criteria: Path | None) -> CriteriaPack:
    from realign.criteria import CriteriaError, load_pack

    try:
        return load_pack(pack, criteria)
    except CriteriaError as e:
        _print_errors(str(e))
        raise typer.Exit(1) from e


def _print_errors(message: str) -> None:
    for line in message.splitlines():
        typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)


def _settings_text(settings: PackSettings) -> str:
    """`prompt rewrite_paper, samples 2, ...`; an unset temperature reads as realign's rule."""
    shown = {k: v for k, v in settings.run_defaults().items() if v is not None}
    if not shown.get("verify"):  # off is the default: saying so on every pack is noise
        shown.pop("verify", None)
    parts = [f"{k} {'yes' if v is True else v}" for k, v in shown.items()]
    return ", ".join(parts)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _source(crit: Criterion, criteria: Path | None) -> str:
    """'user' when the file comes from the --criteria folder, else 'pack'."""
    if criteria is not None and Path(crit.path).parent.resolve() == criteria.resolve():
        return "user"
    return "pack"


def list_cmd(
    pack: str = options.PACK,
    criteria: Path | None = options.CRITERIA,
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    loaded = _load(pack, criteria)
    if as_json:
        for name in loaded.names():
            c = loaded[name]
            row = {
                "name": c.name,
                "group": c.group,
                "rewrite": c.rewrite,
                "retrieval": c.retrieval,
                "examples": len(c.examples),
                "description": c.description,
                "source": _source(c, criteria),
                "path": c.path,
            }
            typer.echo(json.dumps(row, ensure_ascii=False))
        return

    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    if not console.is_terminal:
        # Piped: no screen to fit (rich would assume 80 columns and cut long names with "…"),
        # so one row per line with whole names and descriptions, for grep and cut.
        console.width = PIPED_WIDTH
    # Narrow terminals: the description goes under the name instead of in its own column.
    wide = console.width >= WIDE_TABLE
    labels = [
        loaded[n].name + (" *" if _source(loaded[n], criteria) == "user" else "")
        for n in loaded.names()
    ]
    table = Table(
        title=f"criteria pack '{loaded.name}'",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=wide,  # narrow: no edges, so that the longest name fits in 80 columns
        pad_edge=wide,
    )
    table.add_column(
        "name" if wide else "name / description",
        no_wrap=wide,
        min_width=max(map(len, labels), default=0),  # names stay whole on 80 columns
        overflow="fold",  # a long word in a description is folded, not cut
    )
    table.add_column("group", no_wrap=True)
    table.add_column("rewrite", no_wrap=True)
    table.add_column("retrieval", no_wrap=True)
    table.add_column("#ex", justify="right", no_wrap=True)
    if wide:
        table.add_column("description", overflow="fold")
    user = 0
    for name in sorted(loaded.names(), key=lambda n: (loaded[n].group, n)):
        c = loaded[name]
        label = c.name
        if _source(c, criteria) == "user":
            user += 1
            label += " *"
        cells = [label, c.group, _yes_no(c.rewrite), _yes_no(c.retrieval), str(len(c.examples))]
        if wide:
            cells.append(escape(c.description))
        else:
            cells[0] = f"[bold]{label}[/bold]\n{escape(c.description)}"
        table.add_row(*cells)
    console.print(table)
    footer = f"{len(loaded.names())} criteria, pack hash {loaded.content_hash}"
    if criteria is not None:
        footer += f"; * = {user} from {criteria}"
    console.print(footer)
    from realign.criteria import PackSettings

    if loaded.settings != PackSettings():
        console.print(f"run defaults (pack.yaml): {_settings_text(loaded.settings)}")


def show_cmd(
    name: str = typer.Argument(..., help="Task type name, e.g. open_qa.", show_default=False),
    pack: str = options.PACK,
    criteria: Path | None = options.CRITERIA,
    raw: bool = typer.Option(False, "--raw", help="Print the file exactly as stored."),
) -> None:
    import difflib

    loaded = _load(pack, criteria)
    if name not in loaded:
        close = difflib.get_close_matches(name, loaded.names(), n=3)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise common.die(
            f"no task type '{name}' in pack '{loaded.name}'{hint}; see `realign criteria list`",
            code=1,
        )
    c = loaded[name]
    if raw:
        typer.echo(Path(c.path).read_text(encoding="utf-8-sig"), nl=False)
        return

    from rich.markdown import Markdown
    from rich.markup import escape
    from rich.rule import Rule
    from rich.table import Table

    console = _console()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("name", c.name)
    fields.add_row("file", escape(c.path))
    fields.add_row("group", c.group)
    fields.add_row("rewrite", _yes_no(c.rewrite))
    fields.add_row("retrieval", _yes_no(c.retrieval))
    fields.add_row("description", escape(c.description))
    if c.note:
        fields.add_row("note", escape(c.note))
    fields.add_row("hash", c.content_hash)
    console.print(fields)
    console.print(Rule(f"examples ({len(c.examples)})", align="left"))
    examples = Table.grid(padding=(0, 1))
    examples.add_column(justify="right", no_wrap=True)
    examples.add_column()
    for i, ex in enumerate(c.examples, 1):
        examples.add_row(f"{i}.", escape(ex))
    console.print(examples)
    console.print(
        Rule("format" if c.rewrite else "format (not applied: rewrite is no)", align="left")
    )
    console.print(Markdown(c.format))


def validate_cmd(
    target: str = typer.Argument(
        "realign",
        help="A folder of criteria files, one .md file, or a built-in pack name.",
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail on warnings too."),
) -> None:
    from realign.criteria import (
        SETTINGS_FILE,
        CriteriaError,
        content_hash_of,
        criterion_warnings,
        load_dir,
        load_settings,
        pack_folder,
        parse_criterion,
    )

    path = Path(target)
    try:
        if path.is_file():
            crits = {
                (c := parse_criterion(path.read_text(encoding="utf-8-sig"), str(path))).name: c
            }
            folder = path.parent
            ignored: list[Path] = []
        else:
            folder = pack_folder(target)
            ignored = sorted(
                p
                for p in folder.iterdir()
                if p.is_file()
                and p.suffix != ".md"
                and p.name != SETTINGS_FILE
                and not p.name.startswith(".")
            )
            crits = load_dir(folder)
        settings = load_settings(folder)
    except CriteriaError as e:
        errors = str(e).splitlines()
        _print_errors(str(e))
        typer.secho(f"{len(errors)} error(s)", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from e
    except UnicodeDecodeError as e:
        raise common.die(f"{path}: not UTF-8 text (fix: save the file as UTF-8)", code=1) from e

    if not crits:
        raise common.die(
            f"{folder}: no criteria files (*.md) found "
            f"(fix: add one with `realign criteria new NAME --dir {folder}`)",
            code=1,
        )
    warnings = [w for c in crits.values() for w in criterion_warnings(c)]
    warnings += [f"{p}: ignored, criteria files must end in .md" for p in ignored]
    for w in warnings:
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    if strict and warnings:
        typer.secho(f"{len(warnings)} warning(s) with --strict", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.echo(
        f"ok: {len(crits)} criteria file(s) in {folder} are valid; "
        f"pack hash {content_hash_of(crits)}"
        + (f" ({len(warnings)} warning(s))" if warnings else "")
    )
    if (folder / SETTINGS_FILE).is_file():
        typer.echo(f"ok: {folder / SETTINGS_FILE} is valid: {_settings_text(settings)}")


def new_cmd(
    name: str = typer.Argument(
        ..., help="Name of the new task type (lower_snake_case).", show_default=False
    ),
    directory: Path = NEW_DIR,
    from_: str | None = typer.Option(
        None, "--from", help="Start from this existing task type instead of the blank template."
    ),
    pack: str = options.PACK,
    criteria: Path | None = options.CRITERIA,
) -> None:
    from realign.criteria import (
        CriteriaError,
        dump_criterion,
        new_criterion_text,
        parse_criterion,
    )

    target = directory / f"{name}.md"
    if target.exists():
        raise common.die(
            f"{target} already exists; not overwriting it (fix: edit it, delete it, or choose "
            f"another --dir)",
            code=1,
        )
    try:
        source = from_
        if source is None:
            loaded = _load(pack, criteria)
            source = name if name in loaded else None
        if source is None:
            text = new_criterion_text(name)
            origin = "the template"
        else:
            loaded = _load(pack, criteria)
            if source not in loaded:
                raise CriteriaError(
                    f"--from: no task type '{source}' in pack '{loaded.name}' "
                    f"(fix: pick one from `realign criteria list`)"
                )
            base = loaded[source]
            text = dump_criterion(base.model_copy(update={"name": name, "path": ""}))
            origin = f"'{source}' ({base.path})"
        parse_criterion(text, str(target))  # never write a file that does not validate
    except CriteriaError as e:
        _print_errors(str(e))
        raise typer.Exit(1) from e
    directory.mkdir(parents=True, exist_ok=True)
    with target.open("x", encoding="utf-8") as f:  # "x": refuse to overwrite, even in a race
        f.write(text)
    typer.echo(f"wrote {target} from {origin}")
    typer.echo(
        f"next: edit it, check it with `realign criteria validate {directory}`, "
        f"use it with `--criteria {directory}`"
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(help=GROUP_HELP, no_args_is_help=True, rich_markup_mode="markdown")
    group.command("list", help=LIST_HELP)(list_cmd)
    group.command("show", help=SHOW_HELP)(show_cmd)
    group.command("validate", help=VALIDATE_HELP)(validate_cmd)
    group.command("new", help=NEW_HELP)(new_cmd)
    app.add_typer(group, name="criteria")
