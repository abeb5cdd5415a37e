"""The shape of the code, checked like behaviour: the layers contract, types, module size.

`lint-imports` (import-linter) holds `.importlinter`: no import circle between layers and no
upward import (a stage importing the CLI, a provider importing a stage). mypy checks the types
with the settings in `pyproject.toml`. Both run as the tests run, so CI fails on a breach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "realign"
MAX_MODULE_LINES = 450


def tool(name: str) -> str:
    """The tool installed beside this Python (the venv's), else on PATH."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_layers_contract_holds() -> None:
    res = run_tool(tool("lint-imports"), "--no-cache")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "1 kept, 0 broken" in res.stdout


def test_mypy_finds_no_type_errors() -> None:
    res = run_tool(tool("mypy"))
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def test_no_module_is_over_the_size_a_reader_takes_in_one_go() -> None:
    sizes = {
        str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
        for p in SRC.rglob("*.py")
    }
    too_long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"split these modules (≤ {MAX_MODULE_LINES} lines): {too_long}"


def test_every_module_in_the_tree_is_in_the_developing_map() -> None:
    """DEVELOPING.md's map names every module (a package row may name its folder)."""
    text = (ROOT / "DEVELOPING.md").read_text(encoding="utf-8")
    missing = []
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC)
        if p.name == "__init__.py" and rel.parent != Path("."):
            continue
        names = {f"`{rel.as_posix()}`", f"`{rel.name}`"} | {
            f"`{parent.as_posix()}/`" for parent in rel.parents if parent != Path(".")
        }
        if rel.as_posix() == "__init__.py":
            continue
        if not any(n in text for n in names):
            missing.append(rel.as_posix())
    assert not missing, f"DEVELOPING.md's map does not name: {missing}"
