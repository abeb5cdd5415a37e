"""What every command does the same way: error exits, comma lists, the output's lock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from realign.errors import UsageError

if TYPE_CHECKING:
    from realign.pipeline.state import RunLock


def split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def invoked_command(ctx: typer.Context) -> str:
    """The running command as a shell line: `realign`, the command's words, then its arguments
    and the options given on the command line (defaults left out), shell-quoted. It is written
    into every output record, so anything shaped like a key (a key-like value, a password in
    a URL) is masked."""
    import shlex

    from realign.credentials import MASK, looks_like_credential, redact

    names: list[str] = []
    c: Any = ctx
    while c.parent is not None:  # the root's name is however Python was started
        names.insert(0, c.info_name or "")
        c = c.parent
    words = ["realign", *names]
    for param in ctx.command.params:
        name = param.name or ""
        if getattr(ctx.get_parameter_source(name), "name", "") != "COMMANDLINE":
            continue
        value = ctx.params.get(name)
        values = value if isinstance(value, list | tuple) else [value]
        # A URL keeps its host (`redact` masks just its password); a key-like value goes.
        values = [
            MASK if "://" not in str(v) and looks_like_credential(str(v)) else v for v in values
        ]
        if param.param_type_name == "argument":
            words += [str(v) for v in values]
        elif getattr(param, "is_flag", False):
            words.append(param.opts[0] if value else (param.secondary_opts or param.opts)[0])
        else:
            for v in values:
                words += [max(param.opts, key=len), str(v)]
    return redact(shlex.join(words))


def die(message: str, code: int = 2) -> typer.Exit:
    """Print an error for a person and return the Exit to raise."""
    from realign.cli.console import make_console

    # As data: a message quotes file names and field paths (`items[1].value`), not markup.
    make_console().print(
        f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def lock_output(output: Path) -> RunLock:
    """The run's lock on `output`, taken before anything is paid for; exit 2 when another
    process holds it."""
    from realign.pipeline.state import RunLocked, lock_run

    try:
        return lock_run(output)
    except RunLocked as e:
        raise die(str(e)) from None


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """A `UsageError` from below the CLI becomes `error: …` and exit 2."""
    try:
        yield
    except UsageError as e:
        raise die(str(e)) from None
