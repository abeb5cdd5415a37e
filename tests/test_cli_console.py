"""What the commands print on stderr: one kind of rich Console (emoji codes off) and the
progress display, on a narrow terminal and without a terminal."""

from __future__ import annotations

import ast
import io
import json
import re
import time
from pathlib import Path

import pytest
from packs import write_pack
from rich.console import Console
from typer.testing import CliRunner

from realign.cli.console import make_console
from realign.cli.main import app
from realign.cli.progress import make_progress

SRC = Path(__file__).resolve().parents[1] / "src" / "realign"
runner = CliRunner()


def test_console_prints_colons_as_written() -> None:
    out = io.StringIO()
    make_console(file=out).print("hf:dd:train: 3 records")
    assert out.getvalue() == "hf:dd:train: 3 records\n"  # not "hf:dd🚋 3 records"


def test_every_console_comes_from_the_factory() -> None:
    """A `Console(...)` made anywhere else would print emoji codes again."""
    makers = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                if name == "Console":
                    makers.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert makers == ["cli/console.py:19"]


def test_command_output_keeps_colons(tmp_path: Path) -> None:
    """End to end: `realign report` names its output file, whose name holds `:train:`."""
    src = tmp_path / "out.json"
    src.write_text(
        json.dumps([{"instruction": "Capital of France?", "output": "Paris."}]), encoding="utf-8"
    )
    html = tmp_path / "dd:train:report.html"
    res = runner.invoke(app, ["report", str(src), "--html", str(html)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"wrote {html}" in res.output and "🚋" not in res.output


NOTE = "rw 120 · kept 10 · skip 3 · fail 0 · tok 123456 · $0.0123 · 3.2 req/s · 0 429s · 2 retries"


def render(width: int, total: int | None, done: int, note: str = NOTE) -> list[str]:
    out = io.StringIO()
    con = Console(file=out, width=width, force_terminal=True, color_system=None)
    progress = make_progress(con, total)
    task = progress.add_task("realign", total=total, note=note)
    progress.update(task, advance=done)
    con.print(progress.get_renderable())
    return out.getvalue().splitlines()


def test_bar_survives_an_80_column_terminal() -> None:
    """The long note used to squeeze the bar's columns down to `… 1… rw 120 · …`."""
    first, *rest = render(80, 5000, 133)
    assert first.startswith("realign ") and "133/5000" in first and "…" not in first
    assert " ".join(line.strip() for line in rest) == NOTE  # the whole note, wrapped under it
    assert all(len(line) <= 80 for line in [first, *rest])


def test_bar_with_an_unknown_total() -> None:
    first, note = render(80, None, 7, note="3 cached")
    assert " 7 " in first and "7/" not in first and note.strip() == "3 cached"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(total: int | None, steps: list[tuple[float, int]], **kw: object) -> list[str]:
    """Lines printed without a terminal for updates of (seconds later, records done)."""
    out = io.StringIO()
    con = Console(file=out, width=80)  # a file: not a terminal
    clock = Clock()
    kw.setdefault("heartbeat", None)  # lines only when the test reports: no real-time thread
    with make_progress(con, total, get_time=clock, **kw) as progress:  # type: ignore[arg-type]
        task = progress.add_task("realign", total=total, note="rw 1")
        for seconds, records in steps:
            clock.now += seconds
            progress.update(task, advance=records, note=f"rw {records}")
    return out.getvalue().splitlines()


def test_without_a_terminal_a_line_every_twentieth_of_the_total() -> None:
    lines = plain(100, [(1.0, 1)] * 100)
    assert len(lines) == 20 and all(len(x) <= 80 for x in lines)  # each whole: no wrapping
    assert lines[0] == "realign: 5/100 (5%) · elapsed 0:00:05 · left 0:01:35 · rw 1"
    assert lines[-1].startswith("realign: 100/100 (100%) · elapsed 0:01:40 · rw 1")


def test_without_a_terminal_a_line_every_interval_while_slow() -> None:
    lines = plain(10_000, [(20.0, 1)] * 6, seconds=30.0)
    assert [x.split(" · ")[0] for x in lines] == [
        "realign: 1/10000 (0%)",  # 20 s: past the first line's 10 s
        "realign: 3/10000 (0%)",  # 60 s: 30 s after the last line
        "realign: 5/10000 (0%)",
        "realign: 6/10000 (0%)",  # the last count, at the end
    ]


def test_without_a_terminal_the_first_line_comes_before_any_record() -> None:
    """A slow first record (the embedded model, a cold cache) must not look like a hang: the
    heartbeat prints the first line within `first` seconds, and later ones every `seconds`,
    with no record done."""
    out = io.StringIO()
    con = Console(file=out, width=80)
    progress = make_progress(con, 5, first=0.2, seconds=0.4, heartbeat=0.02)
    with progress:
        progress.add_task("realign", total=5, note="")
        deadline = time.monotonic() + 10
        while out.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and lines[0].startswith("realign: 0/5 (0%) · elapsed 0:00:00")


def test_first_line_within_ten_seconds_then_every_thirty_by_default() -> None:
    from realign.cli import progress as progress_module

    assert progress_module.FIRST_LINE_SECONDS <= 10 and progress_module.LINE_SECONDS == 30
    lines = plain(1000, [(11.0, 0), (10.0, 0), (20.0, 0)])  # nothing done for 41 s
    assert [x.split(" · ")[1] for x in lines] == ["elapsed 0:00:11", "elapsed 0:00:41"]


def test_without_a_terminal_the_last_count_is_printed_at_the_end() -> None:
    lines = plain(None, [(1.0, 1)] * 7, every=5)
    assert [x.split(" · ")[0] for x in lines] == ["realign: 5", "realign: 7"]
    assert plain(None, []) == []  # nothing done: nothing said


def test_run_prints_progress_lines_when_piped(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps({"instruction": f"Who wrote book {i}?", "input": "", "output": f"A{i}."})
            + "\n"
            for i in range(3)
        )
    )
    res = runner.invoke(
        app,
        [
            *("classify", str(src), "-o", str(tmp_path / "o.jsonl")),
            *("--backend", "fake", "--pack", str(write_pack(tmp_path / "pack"))),
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "classify: 3/3 (100%) · elapsed" in res.output


@pytest.mark.parametrize("suffix,limit", [(".json", None), (".json", 2), (".jsonl", 2)])
def test_progress_has_a_total_for_json_and_with_limit(
    tmp_path: Path, suffix: str, limit: int | None
) -> None:
    """A .json array has no cheap line count: it is counted while the run starts, so its
    progress shows N/total like .jsonl. `--limit` caps the total."""
    rows = [
        {"instruction": f"Who wrote book {i}?", "input": "", "output": f"A{i}."} for i in range(3)
    ]
    src = tmp_path / f"in{suffix}"
    src.write_text(
        json.dumps(rows) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in rows)
    )
    args = ["classify", str(src), "-o", str(tmp_path / f"o{suffix}"), "--backend", "fake"]
    args += ["--pack", str(write_pack(tmp_path / "pack"))]
    res = runner.invoke(
        app, [*args, *(["--limit", str(limit)] if limit else [])], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    n = limit or 3
    assert f"classify: {n}/{n} (100%) · elapsed" in res.output, res.output


def criteria_rows(env: dict[str, str]) -> list[str]:
    res = runner.invoke(app, ["criteria", "list"], env=env)
    assert res.exit_code == 0, res.output
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in res.output.splitlines()]


def test_criteria_list_piped_keeps_names_whole() -> None:
    """Piped, rich assumed 80 columns and cut `code_language_classification` to `…classificati…`."""
    from realign.criteria import load_pack

    pack = load_pack("realign", None)
    lines = criteria_rows({"COLUMNS": ""})
    assert not any("…" in line for line in lines)
    for name in pack.names():  # one row per criterion: name, …, its whole description
        (row,) = [line for line in lines if line.split()[:1] == [name]]
        assert " ".join(pack[name].description.split()) in " ".join(row.split())


def test_criteria_list_on_an_80_column_terminal_keeps_names_whole() -> None:
    from realign.criteria import load_pack

    lines = criteria_rows({"COLUMNS": "80", "TTY_COMPATIBLE": "1"})
    assert all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines)
    firsts = {line.split()[0] for line in lines if line.strip()}
    assert set(load_pack("realign", None).names()) <= firsts
    assert any(line.split()[-1] == "53" for line in lines if line.strip())  # #ex not cut
