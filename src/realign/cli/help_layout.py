"""`--help` that stays whole in an 80-column terminal or a pipe (rich's default width, 80).

typer draws options as a seven-column table (required mark, long and short names, the `--no-`
forms, type, help). At 80 columns the columns left for the help are a few characters wide,
and rich cuts whatever does not fit with `…`: option names (`--min-confiden…`), defaults and
examples in the help (`instruction=que…`, `http://127.0.0.…`). Below `STACKED_BELOW` columns,
each option is drawn on its own line instead (names, `--no-` form, type), its help indented
under it at almost the full width; wider terminals keep typer's table.

This replaces typer's private `rich_utils._print_options_panel` (checked with typer 0.29;
`tests/test_cli_help.py` renders every command at 80 columns, so a typer that changes it fails
there, not in front of a user)."""

from __future__ import annotations

from typing import Any

STACKED_BELOW = 100  # terminal columns
HELP_INDENT = 4


def _names(param: Any, ctx: Any) -> Any:
    from rich.text import Text
    from typer import rich_utils

    line = Text()
    if getattr(param, "required", False):
        line.append("* ", style=rich_utils.STYLE_REQUIRED_SHORT)
    else:
        line.append("  ")
    if getattr(param, "param_type_name", "") == "argument":
        label = getattr(param, "display_name_raw", None) or (param.name or "").upper()
        line.append(label, style=rich_utils.STYLE_OPTION)
    else:
        line.append(", ".join(param.opts), style=rich_utils.STYLE_OPTION)
        if param.secondary_opts:
            line.append(" / ")
            line.append(", ".join(param.secondary_opts), style=rich_utils.STYLE_NEGATIVE_OPTION)
    shown = param.display_type_rich(ctx=ctx) if hasattr(param, "display_type_rich") else None
    if shown:
        line.append(f" {shown}", style=rich_utils.STYLE_TYPES)
    number_range = getattr(param, "_get_number_range_help_str", lambda: "")()
    if number_range:
        line.append(rich_utils.RANGE_STRING.format(number_range), style=rich_utils.STYLE_TYPES)
    return line


def install() -> None:
    """Draw options stacked in narrow terminals (idempotent)."""
    from typer import rich_utils

    original = rich_utils._print_options_panel
    if getattr(original, "realign_stacked", False):
        return

    def print_options_panel(
        *, name: str, params: Any, ctx: Any, markup_mode: Any, console: Any
    ) -> None:
        if console.width >= STACKED_BELOW or not params:
            original(
                name=name, params=params, ctx=ctx, markup_mode=markup_mode, console=console
            )
            return
        from rich.console import Group
        from rich.padding import Padding
        from rich.panel import Panel

        rows: list[Any] = []
        for param in params:
            rows.append(_names(param, ctx))
            help_ = rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode)
            rows.append(Padding(help_, (0, 0, 0, HELP_INDENT)))
        console.print(
            Panel(
                Group(*rows),
                border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER,
                title=name,
                title_align=rich_utils.ALIGN_OPTIONS_PANEL,
            )
        )

    print_options_panel.realign_stacked = True  # type: ignore[attr-defined]
    rich_utils._print_options_panel = print_options_panel  # type: ignore[assignment]
