"""For the tests that run realign in a subprocess (SIGKILL resume, fault injection): the
`realign run` command line against the fake OpenAI-compatible server, its environment, and a
kill that lands mid-run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from realign.pipeline.state import state_path


def realign_run_argv(src: Path, out: Path, pack: Path, url: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "realign.cli.main",
        "run",
        str(src),
        "-o",
        str(out),
        "--pack",
        str(pack),
        "--base-url",
        url,
        "--model",
        "gpt-4o-mini",
        "--concurrency",
        str(concurrency),
    ]


def run_env(home: Path, api_key: str, **extra: str) -> dict[str, str]:
    """This process's environment with its own realign home and a (fake) API key."""
    return {**os.environ, "REALIGN_HOME": str(home), "OPENAI_API_KEY": api_key, **extra}


def records_done(out: Path) -> int:
    """Records committed to the run state of `out` so far (0 before it is set up)."""
    path = state_path(out)
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM done").fetchone()[0])
    except sqlite3.Error:
        return 0


def kill_when_done(p: subprocess.Popen[bytes], out: Path, at_least: int) -> int:
    """SIGKILL `p` once `at_least` records of `out` are committed (or after 60 s); returns how
    many were committed at the kill."""
    deadline = time.monotonic() + 60
    while records_done(out) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    done = records_done(out)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    return done
