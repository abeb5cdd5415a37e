"""The `realign` command. Each command group lives in its own module with `register(app)`.

Heavy imports (LLM clients, torch, pyarrow) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from realign import __version__
from realign.cli import help_layout

help_layout.install()  # options stay whole in 80-column terminals and pipes


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """A command-line error of the CLI library (an option out of its range, a missing or
    unknown option) as realign's own: one `error:` line, exit 2, instead of a boxed block."""
    try:
        yield
    except TyperException as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # no arguments: the help, as asked
            raise
        from realign.cli.common import die

        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        raise die(message + hint, code=getattr(e, "exit_code", 2) or 2) from None


class _Group(TyperGroup):
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _one_line_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Group,
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
