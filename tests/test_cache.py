"""The SQLite answer cache: persistence, stages, info/clear, processes, and the CLI."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from realign.cli.main import app
from realign.llm.base import ChatRequest, Message
from realign.llm.cache import Cache, CacheError, cache_info, default_cache_path


def test_default_path_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REALIGN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REALIGN_CACHE", raising=False)
    assert default_cache_path() == tmp_path / "home" / "cache.sqlite"
    monkeypatch.setenv("REALIGN_CACHE", str(tmp_path / "elsewhere.sqlite"))
    assert default_cache_path() == tmp_path / "elsewhere.sqlite"


def test_cache_keys_never_change() -> None:
    # Keys live on in users' caches: a changed hash (JSON spacing, escaping, key order)
    # would silently re-pay every request. Value computed before the hashing was shared.
    r = ChatRequest(
        stage="rewrite",
        messages=[Message(role="user", content="Grüße, 2+2?")],
        json_schema={"type": "object", "b": 1, "a": [1, 2]},
        schema_name="X",
        max_tokens=5,
        record_id="r1",
    )
    key = r.cache_key("openai:http://x/v1:gpt")
    assert key == "d084435801be0630be60413a4e2c37712574998363c5cce6a5a333ac379a35ff"
    # Neither the stage nor the record id is part of what determines the answer.
    assert (
        r.model_copy(update={"stage": "judge", "record_id": None}).cache_key(
            "openai:http://x/v1:gpt"
        )
        == key
    )


def test_set_get_survives_reopen_and_counts_stages(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with Cache(path) as c:
        assert c.get("k1") is None
        c.set("k1", "v1", stage="classify")
        c.set("k2", "v2", stage="rewrite")
        c.set("k2", "v2b", stage="rewrite")  # replaced, not duplicated
    with Cache(path) as c:
        assert c.get("k1") == "v1"
        assert c.get("k2") == "v2b"
        info = c.info()
    assert info.entries == 2
    assert info.by_stage == {"classify": 1, "rewrite": 1}
    assert info.oldest is not None and info.newest is not None and info.oldest <= info.newest


def test_clear_one_stage_then_all(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as c:
        for i in range(5):
            c.set(f"a{i}", "x", stage="judge")
        c.set("b", "x", stage="classify")
        assert c.clear("judge") == 5
        assert len(c) == 1 and "b" in c
        assert c.clear() == 1
        assert len(c) == 0


def test_info_of_missing_cache_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "none.sqlite"
    info = cache_info(path)
    assert not info.exists and info.entries == 0
    assert not path.exists()


def test_not_a_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not sqlite")
    with pytest.raises(CacheError, match=r"bad\.sqlite"):
        Cache(bad)


def test_cache_key_excludes_record_id_and_stage() -> None:
    msgs = [Message(role="user", content="hello")]
    a = ChatRequest(stage="classify", messages=msgs, record_id="1")
    b = ChatRequest(stage="judge", messages=msgs, record_id="2")
    c = ChatRequest(stage="classify", messages=msgs, record_id="1", temperature=0.7)
    assert a.cache_key("openai:https://x/v1:m") == b.cache_key("openai:https://x/v1:m")
    assert a.cache_key("openai:https://x/v1:m") != c.cache_key("openai:https://x/v1:m")
    assert a.cache_key("openai:https://x/v1:m") != a.cache_key("openai:https://y/v1:m")


def _writer(path: str, start: int, n: int) -> None:
    c = Cache(path)
    for i in range(start, start + n):
        c.set(f"k{i}", f"v{i}", stage="s")
    c.close()


def test_several_processes_write_the_same_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    Cache(path).close()  # create the schema once
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p * 300, 300)) for p in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Cache(path) as c:
        assert len(c) == 900
        assert c.get("k899") == "v899"


def test_cli_info_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "cli.sqlite"
    with Cache(path) as c:
        c.set("a", "x", stage="classify")
        c.set("b", "x", stage="judge")
    runner = CliRunner()
    out = runner.invoke(app, ["cache", "info", "--cache", str(path)])
    assert out.exit_code == 0, out.output
    assert str(path) in out.output and "entries: 2" in out.output and "judge" in out.output
    out = runner.invoke(app, ["cache", "clear", "--cache", str(path), "--stage", "judge", "--yes"])
    assert out.exit_code == 0, out.output
    assert "deleted 1 entry" in out.output
    out = runner.invoke(app, ["cache", "info", "--cache", str(path), "--json"])
    assert '"entries": 1' in out.output


def test_cli_info_uses_realign_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALIGN_CACHE", str(tmp_path / "env.sqlite"))
    out = CliRunner().invoke(app, ["cache", "info"])
    assert out.exit_code == 0
    assert "env.sqlite" in out.output and "does not exist yet" in out.output
