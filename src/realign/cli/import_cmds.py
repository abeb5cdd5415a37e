"""`realign criteria import-realign PATH -o DIR`: a pack from the user's ReAlign checkout."""

from __future__ import annotations

from pathlib import Path

import typer

IMPORT_HELP = """Write a criteria pack from your own ReAlign checkout (GAIR-NLP/ReAlign), with
ReAlign's texts exactly: one criteria file per task type (description, format, rewrite and
retrieval flags, group), the rewrite prompts (with evidence, and the non-adaptive ones --force
uses), the judge prompts, and `pack.yaml` (samples, temperature, selection, max tokens, filter
preset, search parameters, the checkout's git commit).

The checkout is parsed, never executed. The pack asks and reads ReAlign's way
(`answer_style: realign-text`): its templates are sent as they are, and the reply is read for
"Revised response:".

Examples:

    git clone https://github.com/GAIR-NLP/ReAlign ~/ReAlign
    realign criteria import-realign ~/ReAlign -o realign-exact
    realign run data.json -o out.json --criteria realign-exact --show-prompt 0
    realign run data.json -o out.json --criteria realign-exact --model gpt-4o
"""


CHECKOUT = typer.Argument(..., help="A ReAlign checkout (the folder holding code/).")
OUT_DIR = typer.Option(..., "-o", "--output", help="Folder to write the pack into.")


def import_realign_cmd(path: Path = CHECKOUT, output: Path = OUT_DIR) -> None:
    from realign.criteria import CriteriaError, load_pack
    from realign.realign_import import read_checkout, write_pack

    try:
        imported = read_checkout(path)
        files = write_pack(imported, path, output)
        pack = load_pack(str(output.resolve()))  # an absolute path: always a folder
    except (CriteriaError, OSError) as e:
        for line in str(e).splitlines():
            typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from e
    for w in imported.warnings:
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    n_rewrite = sum(c.rewrite for c in pack.criteria.values())
    n_retrieval = sum(c.retrieval for c in pack.criteria.values())
    typer.echo(
        f"wrote {len(files)} files to {output}: {len(pack.criteria)} task types "
        f"({n_rewrite} rewritten, {n_retrieval} with retrieval), {len(pack.templates)} templates, "
        f"{output / 'pack.yaml'} (commit {imported.commit or 'unknown'})"
    )
    typer.echo(f"next: realign run IN -o OUT --criteria {output}  (--show-prompt ID to see it)")
