"""The `realign` command. Each command group lives in its own module with `register(app)`.

Heavy imports (LLM clients, torch, pyarrow) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import importlib

import typer

from realign import __version__
from realign.cli import help_layout

help_layout.install()  # options stay whole in 80-column terminals and pipes

app = typer.Typer(
    name="realign",
    help=(
        "Make SFT data better without new data.\n\n"
        "Typical flow: `realign stats data.json` → `realign run data.json -o out.json --dry-run` "
        "(cost) → `realign run data.json -o out.json` → `realign report out.json --html r.html`."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = [
    "realign.cli.data_cmds",  # convert, stats
    "realign.cli.criteria_cmds",  # criteria list|show|validate|new
    "realign.cli.run_cmds",  # run, classify
    "realign.cli.retrieve_cmds",  # retrieve
    "realign.cli.judge_cmds",  # judge, report
    "realign.cli.cache_cmds",  # cache info|clear, batch status|collect
    "realign.cli.augment_cmds",  # rephrase, generate, filter
    "realign.cli.push_cmds",  # push
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"realign {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """realign command line."""


for _mod in COMMAND_MODULES:
    try:
        module = importlib.import_module(_mod)
    except ModuleNotFoundError as e:  # a command group not built yet
        if e.name != _mod:
            raise
        continue
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
