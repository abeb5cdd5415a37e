"""The one place realign makes a rich Console, so every command prints text the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def make_console(*, stderr: bool = True, **options: Any) -> Console:
    """A rich Console for realign's messages, tables and progress (stderr unless told).

    Emoji codes are off: rich would print `hf:dd:train:` as `hf:dd🚋`, and file names,
    dataset splits, task types and model names are full of colons.
    """
    from rich.console import Console

    return Console(stderr=stderr, emoji=False, **options)
