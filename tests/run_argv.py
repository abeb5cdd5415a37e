"""The `realign run` command line that the subprocess tests (SIGKILL resume, fault injection)
start against the fake OpenAI-compatible server."""

from __future__ import annotations

import os
import sys
from pathlib import Path


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
