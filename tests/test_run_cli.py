"""`realign run` end to end through the CLI: outputs, failures, dry run, and exact resume
after SIGKILL against a local OpenAI-compatible server (benchmarks/fake_openai_server.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packs import write_pack
from subprocess_runs import kill_when_done, realign_run_argv, run_env
from typer.testing import CliRunner

from realign.cli.main import app
from realign.pipeline.state import state_path
from realign.stages.filter import PRESETS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess  # noqa: E402

runner = CliRunner()


def alpaca(n: int) -> str:
    return "".join(
        json.dumps(
            {
                "instruction": f"Question number {i}: who wrote book {i}?",
                "input": "",
                "output": f"Author {i} wrote book {i} in year {1900 + i}.",
                "id": f"r{i}",
            }
        )
        + "\n"
        for i in range(n)
    )


def test_run_writes_output_and_failures_in_input_order(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = alpaca(5).splitlines()
    lines.insert(2, "{not json")
    src.write_text("\n".join(lines) + "\n")
    pack = write_pack(tmp_path / "pack")
    out = tmp_path / "out.jsonl"
    res = runner.invoke(
        app, ["run", str(src), "-o", str(out), "--backend", "fake", "--pack", str(pack)]
    )
    assert res.exit_code == 1, res.output  # one record failed (unreadable line)
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == ["r0", "r1", "r2", "r3", "r4"]
    (fail,) = [json.loads(x) for x in (tmp_path / "out.failures.jsonl").read_text().splitlines()]
    assert fail["stage"] == "load" and "in.jsonl:3" in fail["error"]
    assert not state_path(out).exists()  # the state is removed once the output is written


def test_classify_summary_names_the_command_and_shows_no_rewrite_counts(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(3))
    out = tmp_path / "typed.jsonl"
    res = runner.invoke(
        app,
        [
            "classify",
            str(src),
            "-o",
            str(out),
            "--backend",
            "fake",
            "--pack",
            str(write_pack(tmp_path / "pack")),
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "realign classify" in res.output and "task types" in res.output
    # The summary counts records and says so (the report counts responses).
    assert "task types (records)" in res.output and "Counts are records" in res.output
    assert "rewritten" not in res.output and "skipped" not in res.output
    assert all(json.loads(x)["realign"]["task_type"] for x in out.read_text().splitlines())


def test_dry_run_sends_nothing(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(4))
    pack = write_pack(tmp_path / "pack")
    # Nothing listens on port 9: any request would fail the run.
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--dry-run",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "gpt-4o-mini",
            "--pack",
            str(pack),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "classify" in res.output and "rewrite" in res.output and "$" in res.output
    assert not (tmp_path / "o.jsonl").exists()
    assert not (Path(os.environ["REALIGN_HOME"]) / "cache.sqlite").exists()


def test_unknown_task_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(1))
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--backend",
            "fake",
            "--tasks",
            "open_qa,not_a_type",
        ],
    )
    assert res.exit_code == 2 and "not_a_type" in res.output
    res = runner.invoke(app, ["run", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and "no such file" in res.output


def _run(src: Path, out: Path, pack: Path, url: str, home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        realign_run_argv(src, out, pack, url, concurrency=4),
        env=run_env(home, "sk-test-secret-123456"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # our own fake server only
def test_sigkill_then_rerun_gives_exactly_once_output(tmp_path: Path) -> None:
    n = 80
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(n))
    pack = write_pack(tmp_path / "pack")
    with serve_in_subprocess(ServerConfig(latency=0.05, seed=1)) as url:
        # Uninterrupted reference run.
        ref = tmp_path / "ref.jsonl"
        p = _run(src, ref, pack, url, tmp_path / "home-ref")
        assert p.wait(120) == 0, p.stderr.read().decode() if p.stderr else ""
        ref_requests = fetch_stats(url).requests

        out = tmp_path / "out.jsonl"
        home = tmp_path / "home"
        done_at_kill = kill_when_done(_run(src, out, pack, url, home), out, at_least=15)
        assert 15 <= done_at_kill < n, "the kill must land mid-run"
        assert not out.exists()

        p = _run(src, out, pack, url, home)
        assert p.wait(120) == 0, p.stderr.read().decode() if p.stderr else ""
        total_requests = fetch_stats(url).requests - ref_requests

    ref_ids = [json.loads(x)["id"] for x in ref.read_text().splitlines()]
    out_ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert out_ids == ref_ids == [f"r{i}" for i in range(n)]
    assert not (tmp_path / "out.failures.jsonl").exists()  # no record failed
    # Nothing paid twice: at most the requests in flight at the kill (concurrency 4) repeat.
    assert total_requests <= ref_requests + 4
    # The API key never lands in the outputs, the state or the cache.
    for f in [out, tmp_path / "out.failures.jsonl", *home.rglob("*")]:
        if f.is_file():
            assert b"sk-test-secret-123456" not in f.read_bytes(), f


def test_fields_input_is_written_back_through_the_same_mapping(tmp_path: Path) -> None:
    src = tmp_path / "gsm.jsonl"
    src.write_text(json.dumps({"question": "2+3?", "answer": "2+3=5\n#### 5"}) + "\n")
    out = tmp_path / "out.jsonl"
    res = runner.invoke(
        app,
        [
            "run",
            str(src),
            "-o",
            str(out),
            "--backend",
            "fake",
            "--force",
            "--fields",
            "instruction=question,response=answer",
            "--pack",
            str(write_pack(tmp_path / "pack")),
        ],
    )
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["question"] == "2+3?" and "#### 5" in row["answer"] and "realign" in row


def test_filter_preset_flag_is_applied_and_named_in_the_output(tmp_path: Path) -> None:
    src = tmp_path / "gsm.jsonl"
    row = {"question": "2+3?", "answer": "2+3=5\n#### 5", "category": "math_puzzles"}
    src.write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    argv = ["run", str(src), "-o", str(out), "--backend", "fake", "--force"]
    argv += ["--fields", "instruction=question,response=answer"]
    argv += ["--pack", str(write_pack(tmp_path / "pack"))]
    res = runner.invoke(app, [*argv, "--filter-preset", "gsm8k"])
    assert res.exit_code == 0, res.output
    (got,) = [json.loads(x) for x in out.read_text().splitlines()]
    decision = got["realign"]["units"][0]["filter"]
    # The fake model's rewrite keeps the original (`**Answer:** 2+3=5\n#### 5`): every rule of
    # the gsm8k preset passes it.
    assert decision["preset"] == "gsm8k" and decision["rule"] == "passed"
    # the preset's own rules in its order, among the safety rules every preset runs
    ours = [r for r in decision["checked"] if r in ("final_answer_lost", "length_ratio")]
    assert decision["checked"][:2] == ["unchanged", "meta_text"]
    assert ours == ["final_answer_lost", "length_ratio"]
    assert decision["checked"] == list(PRESETS["gsm8k"])
    assert got["answer"].endswith("#### 5") and got["realign"]["status"] == "rewritten"
    assert "passed 1" in " ".join(res.output.split())

    res = runner.invoke(app, [*argv, "--filter-preset", "sharegpt"])  # no such preset
    assert res.exit_code != 0 and "--filter-preset 'sharegpt'" in res.output
    assert "open-platypus" in res.output


def test_the_recorded_command_carries_no_secret(tmp_path: Path) -> None:
    """Provenance records the command line in every output record: a password in a URL or a
    key-shaped value must not land there."""
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(2))
    out = tmp_path / "out.jsonl"
    url = "http://someone:pa55-w0rd-secret@127.0.0.1:9/v1"
    argv = ["run", str(src), "-o", str(out), "--backend", "fake", "--base-url", url]
    res = runner.invoke(app, [*argv, "--model", "sk-proj-AbCdEf0123456789xyz"])
    assert res.exit_code == 0, res.output
    commands = {
        json.loads(x)["realign"]["provenance"]["command"] for x in out.read_text().splitlines()
    }
    (command,) = commands
    assert command.startswith("realign run ") and "--base-url" in command
    assert "pa55-w0rd-secret" not in out.read_text() and "AbCdEf0123456789xyz" not in command
    assert "someone:***@127.0.0.1" in command
