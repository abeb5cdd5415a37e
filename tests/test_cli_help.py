"""The command line as a person reads it: flag names and `--help` texts of every command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from realign.cli.main import app

runner = CliRunner()


def commands() -> list[tuple[list[str], Any]]:
    """Every command and group of `realign`, with the words that call it."""
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        found.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():  # a group
            walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


COMMANDS = commands()


def example_lines(help_text: str) -> list[str]:
    """The example command lines of a help text: lines that start with `realign ` inside a
    code block (indented or fenced), whitespace-normalised."""
    return [
        " ".join(line.split())
        for line in help_text.splitlines()
        if line.startswith(("    realign ", "realign "))
    ]


def help_of(path: list[str], columns: int) -> str:
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    return res.output


def test_every_command_is_walked() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"run", "classify", "judge", "criteria list", "criteria show", "batch collect"} <= names


@pytest.mark.parametrize(
    "path", [p for p, c in COMMANDS if any(o.name == "no_cache" for o in c.params)], ids=" ".join
)
def test_no_cache_is_one_flag_not_a_pair(path: list[str]) -> None:
    """`no_cache: bool` made typer offer --no-cache/--no-no-cache."""
    cmd = dict((" ".join(p), c) for p, c in COMMANDS)[" ".join(path)]
    (opt,) = [o for o in cmd.params if o.name == "no_cache"]
    assert opt.opts == ["--no-cache"] and not opt.secondary_opts
    assert "no-no-cache" not in help_of(path, 200)


def test_no_cache_flag_is_accepted(tmp_path) -> None:
    """The flag still parses and reaches the command (here: `classify` with the fake backend)."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "Capital of France?", "input": "", "output": "Paris."}\n')
    res = runner.invoke(
        app,
        ["classify", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--no-cache"],
    )
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "realign-home" / "cache.sqlite").exists()


WITH_EXAMPLES = [(p, c) for p, c in COMMANDS if example_lines(c.help or "")]


def test_commands_with_examples_are_found() -> None:
    names = {" ".join(p) for p, _ in WITH_EXAMPLES}
    assert {"criteria list", "criteria show", "run", "judge", "retrieve"} <= names


@pytest.mark.parametrize(
    "path,cmd", WITH_EXAMPLES, ids=[" ".join(p) or "realign" for p, _ in WITH_EXAMPLES]
)
def test_help_keeps_each_example_on_its_own_line(path: list[str], cmd: Any) -> None:
    """typer re-dedents the help after its first paragraph, which turned the indented examples
    of `criteria list`/`show` into one re-flowed paragraph."""
    shown = {" ".join(line.split()) for line in help_of(path, 160).splitlines()}
    missing = [e for e in example_lines(cmd.help or "") if e not in shown]
    assert not missing, f"re-flowed or wrapped in `realign {' '.join(path)} --help`: {missing}"


@pytest.mark.parametrize(
    "path,cmd", WITH_EXAMPLES, ids=[" ".join(p) or "realign" for p, _ in WITH_EXAMPLES]
)
def test_examples_fit_an_80_column_terminal(path: list[str], cmd: Any) -> None:
    """A long example wraps mid-command at 80 columns; they use `\\` continuations instead."""
    shown = {" ".join(line.split()) for line in help_of(path, 80).splitlines()}
    long = [e for e in example_lines(cmd.help or "") if e not in shown]
    assert not long, f"wrapped at 80 columns: {long}"


def test_example_lines_reads_indented_and_fenced_blocks() -> None:
    text = "Intro.\n\nExamples:\n\n    realign a  --x\n\n```\nrealign b\n```\n"
    assert example_lines(text) == ["realign a --x", "realign b"]


def _flat(text: str) -> str:
    """Help text as words: the panel borders and the line breaks gone, markdown marks too."""
    text = re.sub(r"[│╭╮╰╯─]", " ", text)
    return " ".join(text.replace("`", "").replace("**", "").split())


def _long_words(help_text: str) -> list[str]:
    """The words of a help text that rich would cut rather than wrap: examples such as
    `instruction=question,response=answer`, URLs, comma lists (12 characters or more)."""
    words = [w.replace("`", "").replace("**", "").strip("*,.;:()'\"") for w in help_text.split()]
    return [w for w in words if len(w) >= 12 and "…" not in w]


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "realign" for p, _ in COMMANDS])
def test_help_at_80_columns_cuts_no_option_default_or_example(path: list[str], cmd: Any) -> None:
    """`--help` in an 80-column terminal or a pipe (CliRunner is one) showed `--min-confiden…`
    and `instruction=que…`: every option name, default and long word must be whole."""
    shown = help_of(path, 80)
    assert max(len(line) for line in shown.splitlines()) <= 80
    flat = _flat(shown)
    sources = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    # Any `…` shown is one the help texts themselves contain, never rich's cut.
    assert flat.count("…") <= sum(t.count("…") for t in sources), shown
    for param in cmd.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert re.search(rf"(^|[\s,/]){re.escape(name)}([\s,]|$)", flat), (name, shown)
        for word in _long_words(getattr(param, "help", None) or ""):
            assert word in flat, (param.name, word, shown)
        if param.show_default and param.default not in (None, False, True) and not param.required:
            default = str(param.default.value if hasattr(param.default, "value") else param.default)
            assert f"[default: {default}]" in flat or default in flat, (param.name, shown)
    for word in _long_words(cmd.help or ""):
        assert word in flat, (word, shown)


def test_piped_help_uses_80_columns_and_cuts_nothing() -> None:
    """A real pipe, no COLUMNS: rich falls back to 80 columns."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    res = subprocess.run(
        [sys.executable, "-m", "realign.cli.main", "run", "--help"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    flat = _flat(res.stdout)
    for name in ("--min-confidence", "--search-endpoint", "--max-record-mb", "--fields"):
        assert name in flat
    assert "instruction=question,response=answer" in flat
