"""`realign run` against a server that misbehaves (5% 429, 5% 500, 2% hangs, 2% malformed
JSON): every record ends in the output or the failures file with a reason, a rerun retries
the failures, and no API key is written anywhere (outputs, state, cache, cassettes)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packs import write_pack
from subprocess_runs import kill_when_done, realign_run_argv, records_done, run_env

from realign.io.write import RecordWriter
from realign.pipeline.record import write_outputs
from realign.pipeline.runner import write_failures
from realign.pipeline.state import RunLocked, RunState, lock_run, state_path
from realign.records import Failure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess  # noqa: E402

KEY = "sk-test-faults-9f8e7d6c5b4a"


def _lines(path: Path) -> list[str]:
    """The lines of a failures file; none when it is not there (no record failed)."""
    return path.read_text().splitlines() if path.exists() else []


def _run(
    src: Path, out: Path, pack: Path, url: str, home: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        realign_run_argv(src, out, pack, url, concurrency=16),
        env=run_env(home, KEY, REALIGN_TIMEOUT="2"),  # a hung request gives up after 2 s
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # our own fake server only
def test_every_record_is_accounted_for_and_a_rerun_retries_failures(tmp_path: Path) -> None:
    n = 120
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {
                    "instruction": f"Explain item {i}.",
                    "input": "",
                    "output": f"Item {i} is a thing.",
                    "id": f"r{i}",
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    pack = write_pack(tmp_path / "pack")
    out, home = tmp_path / "out.jsonl", tmp_path / "home"
    faults = ServerConfig(
        latency=0.01, p429=0.05, p500=0.05, phang=0.02, pmalformed=0.02, hang_seconds=30, seed=7
    )
    with serve_in_subprocess(faults) as url:
        first = _run(src, out, pack, url, home)
        assert first.returncode in (0, 1), first.stderr
        ok = [json.loads(x)["id"] for x in out.read_text().splitlines()]
        failed = [json.loads(x) for x in _lines(tmp_path / "out.failures.jsonl")]
        assert sorted(ok + [f["id"] for f in failed]) == sorted(f"r{i}" for i in range(n))
        assert len(set(ok)) == len(ok)
        for f in failed:  # each failure says where and why, with its input record
            assert (
                f["stage"] in {"classify", "rewrite"}
                and f["error"]
                and f["record"]["id"] == f["id"]
            )
        # A rerun of the same command retries the failures (answers paid for come from the cache).
        second = _run(src, out, pack, url, home)
        assert second.returncode in (0, 1), second.stderr
        ok2 = [json.loads(x)["id"] for x in out.read_text().splitlines()]
        failed2 = _lines(tmp_path / "out.failures.jsonl")  # removed when none failed
        assert len(ok2) + len(failed2) == n and len(ok2) >= len(ok)
        st = fetch_stats(url)  # the faults really happened
        assert min(st.injected_429, st.injected_500, st.hangs, st.malformed) > 0
    for f in [out, tmp_path / "out.failures.jsonl", *home.rglob("*")]:
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    assert KEY not in first.stderr + second.stderr


def _records(n: int, flaky: set[int]) -> str:
    return "".join(
        json.dumps(
            {
                "instruction": f"Explain item {i}." + (" FLAKY" if i in flaky else ""),
                "output": f"Item {i} is a thing.",
                "id": f"r{i}",
            }
        )
        + "\n"
        for i in range(n)
    )


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_reruns_drive_failures_from_invalid_json_to_zero(tmp_path: Path) -> None:
    # Every request about the 4 FLAKY records is answered with invalid JSON until 12 such
    # answers were sent: each of them fails its classify call (3 attempts) in the first run.
    # The bad answers must not be replayed from the cache: a rerun asks again and succeeds.
    src, out, home = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "home"
    flaky = {1, 4, 7, 10}
    src.write_text(_records(12, flaky))
    pack = write_pack(tmp_path / "pack")
    fails = tmp_path / "out.failures.jsonl"
    server = ServerConfig(malformed_marker="FLAKY", malformed_budget=3 * len(flaky))
    with serve_in_subprocess(server) as url:
        first = _run(src, out, pack, url, home)
        assert first.returncode == 1, first.stderr
        failed = [json.loads(x) for x in fails.read_text().splitlines()]
        assert sorted(f["id"] for f in failed) == sorted(f"r{i}" for i in flaky)
        assert all("did not match" in f["error"] for f in failed)
        sent = fetch_stats(url).requests
        history = [len(failed)]
        while history[-1] and len(history) < 4:
            rerun = _run(src, out, pack, url, home)
            assert rerun.returncode in (0, 1), rerun.stderr
            history.append(len(_lines(fails)))  # no failures file once none failed
        assert history == [len(flaky), 0] and rerun.returncode == 0
        # The rerun sent the failed records' requests again instead of replaying the cache.
        st = fetch_stats(url)
        assert st.requests - sent >= len(flaky) and st.malformed == 3 * len(flaky)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [
        f"r{i}" for i in range(12)
    ]


def test_one_run_per_output_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = lock_run(out)
    with pytest.raises(RunLocked) as e:
        lock_run(out)
    message = str(e.value)
    assert str(out) in message and f"pid {os.getpid()} on {socket.gethostname()}" in message
    with pytest.raises(RunLocked):  # a bare RunState on the same state file is refused too
        RunState(state_path(out), "fp")
    first.release()
    RunState(state_path(out), "fp").close(remove=True)
    assert not list(tmp_path.iterdir())  # state and lock file gone with the finished run
    # A holder that dies without releasing (kill -9) releases its lock with its descriptors.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from realign.pipeline.state import lock_run; "
            f"lock = lock_run(Path({str(out)!r})); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} "):
            lock_run(out)
    finally:
        holder.kill()
        holder.wait(10)
    lock_run(out).release()


def test_a_new_run_removes_what_a_killed_write_left(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stale = [tmp_path / ".out.jsonl.partial", tmp_path / ".out.failures.jsonl.partial"]
    other = tmp_path / ".out2.jsonl.partial"  # another output's: not ours to remove
    for f in [*stale, other]:
        f.write_text("half a file")
    lock_run(out).release()
    assert [f.exists() for f in stale] == [False, False] and other.exists()


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])
def test_a_second_run_on_the_same_output_exits_2_naming_the_first(tmp_path: Path) -> None:
    src, out, home = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "home"
    src.write_text(_records(60, set()))
    pack = write_pack(tmp_path / "pack")
    with serve_in_subprocess(ServerConfig(latency=0.5)) as url:  # 60 records: 15 s or more
        argv = realign_run_argv(src, out, pack, url, concurrency=2)
        env = run_env(home, KEY)
        first = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        try:
            while records_done(out) < 2:  # the first run holds the lock and is paying
                assert first.poll() is None, "the first run ended too soon"
                time.sleep(0.05)
            second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            said = " ".join(second.stderr.split())
            assert f"pid {first.pid} " in said and "another realign run is writing" in said
            assert first.poll() is None  # the first run goes on, undisturbed
        finally:
            done = kill_when_done(first, out, at_least=4)  # kill -9: its lock must not linger
        assert 0 < done < 60
        third = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stderr
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == [
        f"r{i}" for i in range(60)
    ]


class Killed(BaseException):
    """Stands for a kill arriving while the failures file is being written."""


def _failed_state(tmp_path: Path, out: Path, n: int) -> RunState:
    state = RunState(state_path(out), "fp")
    for i in range(n):
        fail = Failure(id=f"r{i}", index=i, stage="rewrite", error="bad JSON")
        state.commit(i, False, fail.model_dump_json())
    return state


def test_a_kill_while_writing_failures_leaves_the_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fails = tmp_path / "out.failures.jsonl"
    fails.write_text('{"previous": "run"}\n')
    state = _failed_state(tmp_path, out, 3)

    def kill_after_the_first(line: Failure) -> None:
        if line.index == 1:
            raise Killed

    with pytest.raises(Killed):
        write_outputs(state, out, RecordWriter, on_failed=kill_after_the_first)
    assert fails.read_text() == '{"previous": "run"}\n'  # whole: not emptied, not half new
    assert [p.name for p in tmp_path.glob(".*.partial")] == []
    assert write_outputs(state, out, RecordWriter)[1] == 3
    assert len(fails.read_text().splitlines()) == 3
    state.close(remove=True)


def test_augment_failures_file_is_written_atomically_too(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fails = tmp_path / "out.failures.jsonl"
    fails.write_text("previous\n")
    state = _failed_state(tmp_path, out, 2)

    def extra() -> Iterator[Failure]:
        yield Failure(id="x", index=9, stage="load", error="unreadable")
        raise Killed

    with pytest.raises(Killed):
        write_failures(state, fails, extra())
    assert fails.read_text() == "previous\n" and not list(tmp_path.glob(".*.partial"))
    assert write_failures(state, fails) == 2
    state.close(remove=True)


def test_no_cassette_holds_a_credential() -> None:
    pattern = re.compile(
        r"(sk-[A-Za-z0-9]{8,}|[?&]key=[^&\s'\"]+|authorization:|x-api-key:)", re.IGNORECASE
    )
    hits = [
        f"{p}: {m.group(0)}"
        for p in (ROOT / "cassettes").rglob("*.yaml")
        for m in pattern.finditer(p.read_text(encoding="utf-8"))
    ]
    assert hits == []


def test_state_commits_in_batches_and_close_makes_them_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realign.pipeline import state as state_mod

    monkeypatch.setattr(state_mod, "COMMIT_AFTER_S", 3600.0)  # only the count bound here
    out = tmp_path / "out.jsonl"
    state = RunState(state_path(out), "fp")
    for i in range(state_mod.COMMIT_EVERY + 3):
        state.commit(i, True, f'{{"i": {i}}}')
    # Another reader (a kill would leave just this) sees the full batch, not the 3 after it.
    assert records_done(out) == state_mod.COMMIT_EVERY
    assert state.count() == state_mod.COMMIT_EVERY + 3  # the run itself sees everything
    state.commit(1, False, "{}")  # a record is committed once, even if processed twice
    state.close()
    assert records_done(out) == state_mod.COMMIT_EVERY + 3
    reopened = RunState(state_path(out), "fp")
    assert reopened.resumed and list(reopened.iter_payloads(ok=True))[:2] == ['{"i": 0}', '{"i": 1}']
    reopened.close(remove=True)


def test_state_commits_at_least_every_commit_after_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realign.pipeline import state as state_mod

    monkeypatch.setattr(state_mod, "COMMIT_AFTER_S", 0.0)  # every commit ends its batch
    out = tmp_path / "out.jsonl"
    state = RunState(state_path(out), "fp")
    state.commit(0, True, "{}")
    assert records_done(out) == 1
    state.close(remove=True)
