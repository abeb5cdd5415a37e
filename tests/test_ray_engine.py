"""`realign run --engine ray`: the same outputs as the local engine, exact resume after a kill,
one rate budget shared by every worker, one cache shared by every worker.

One local Ray session for the module (`num_cpus=2`); the budget's lease logic is also tested
without Ray, on a plain `Budget`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from book_records import alpaca, without_time
from packs import TYPES, write_pack
from subprocess_runs import kill_when_done, realign_run_argv, run_env
from typer.testing import CliRunner

from realign.cli.main import app
from realign.distributed import RayUnavailable, require_ray
from realign.distributed.budget import Budget, SharedLimit, SharedPacer
from realign.llm.cache import Cache

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.block_network(allowed_hosts=["127.0.0.1"])]
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_session():  # type: ignore[no-untyped-def]
    import ray

    path = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


def test_ray_run_writes_what_the_local_engine_writes_and_shares_one_cache(
    ray_session: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = alpaca(300)
    lines.insert(7, "{not json")  # a load failure, committed by the driver
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    # The fake classifier answers `default`: let that type be rewritten (`--force` no longer
    # rewrites `rewrite: no` types), so both engines write rewrites to compare.
    types = {**TYPES, "default": ("Anything that fits no other type.", "yes", "no", "Answer.")}
    pack = str(write_pack(tmp_path / "pack", types))
    common = ["--backend", "fake", "--pack", pack, "--force"]
    ray_argv = ["--engine", "ray", "--workers", "2"]
    outs = {}
    for name, home, extra in (("local", "home-local", []), ("ray", "home", ray_argv)):
        monkeypatch.setenv("REALIGN_HOME", str(tmp_path / home))
        out = tmp_path / f"{name}.jsonl"
        res = runner.invoke(app, ["run", str(src), "-o", str(out), *common, *extra])
        assert res.exit_code == 1, res.output  # the unreadable line, in both
        assert out.exists(), f"{name}: no output file\n{res.output}\n{res.exception!r}"
        outs[name] = (
            without_time(out.read_text()),
            (tmp_path / f"{name}.failures.jsonl").read_text(),
        )
    ids = [json.loads(x)["id"] for x in outs["ray"][0].splitlines()]
    assert ids == [f"r{i}" for i in range(300)]
    statuses = {json.loads(x)["realign"]["status"] for x in outs["ray"][0].splitlines()}
    assert statuses <= {"rewritten", "kept"} and "rewritten" in statuses
    assert outs["ray"] == outs["local"]

    # The workers stored their answers in the driver's cache (classify + rewrite per record);
    # a second run is answered from it, whichever worker asks.
    with Cache(tmp_path / "home" / "cache.sqlite") as cache:
        assert len(cache) == 600
    out = tmp_path / "again.jsonl"
    res = runner.invoke(
        app, ["run", str(src), "-o", str(out), *common, *ray_argv], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 1, res.output
    assert re.search(r"requests\s+0 \(600 from cache\)", res.output), res.output
    assert without_time(out.read_text()) == outs["ray"][0]


def test_ray_workers_run_the_verify_check(ray_session: object, tmp_path: Path) -> None:
    """`--verify` reaches the workers with the run's options: every rewrite the rules passed
    was checked (the fake model says yes), and the checks are in the shared cache."""
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(alpaca(6)) + "\n")
    types = {**TYPES, "default": ("Anything that fits no other type.", "yes", "no", "Answer.")}
    pack = str(write_pack(tmp_path / "pack", types))
    out = tmp_path / "out.jsonl"
    argv = ["run", str(src), "-o", str(out), "--backend", "fake", "--pack", pack, "--force"]
    res = runner.invoke(app, [*argv, "--verify", "--engine", "ray", "--workers", "2"])
    assert res.exit_code == 0, res.output
    units = [u for x in out.read_text().splitlines() for u in json.loads(x)["realign"]["units"]]
    passed = [u for u in units if u["filter"]["rule"] == "passed"]
    assert passed and all(u["filter"]["checked"][-1] == "verify" for u in passed)
    with Cache(tmp_path / "realign-home" / "cache.sqlite") as cache:
        assert len(cache) == 6 * 2 + len(passed)  # classify + rewrite per record, and the checks


def test_sigkill_then_rerun_finishes_without_duplicates(ray_session: Any, tmp_path: Path) -> None:
    # The runs join this module's Ray cluster (`--address`), as on a real cluster: the driver
    # is killed, the cluster stays.
    address = ray_session.get_runtime_context().gcs_address
    # Results reach the driver a block (32 records) at a time, and the blocks in flight share
    # the budget of 4: enough records that the kill lands between two blocks.
    n = 400
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(alpaca(n)) + "\n")
    pack = write_pack(tmp_path / "pack")
    with serve_in_subprocess(ServerConfig(latency=0.02, seed=1)) as url:

        def run(out: Path, home: Path, *extra: str) -> subprocess.Popen[bytes]:
            argv = realign_run_argv(src, out, pack, url, concurrency=4)
            return subprocess.Popen(
                [*argv, *extra],
                env=run_env(home, "sk-test-secret-123456"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

        ref = tmp_path / "ref.jsonl"  # the local engine, uninterrupted
        p = run(ref, tmp_path / "home-ref")
        assert p.wait(120) == 0, p.stderr.read().decode() if p.stderr else ""
        ref_requests = fetch_stats(url).requests

        out, home = tmp_path / "out.jsonl", tmp_path / "home"
        ray_argv = ("--engine", "ray", "--workers", "2", "--address", address)
        done_at_kill = kill_when_done(run(out, home, *ray_argv), out, at_least=20)
        assert 20 <= done_at_kill < n, "the kill must land mid-run"
        assert not out.exists()
        p = run(out, home, *ray_argv)
        assert p.wait(180) == 0, p.stderr.read().decode() if p.stderr else ""
        total_requests = fetch_stats(url).requests - ref_requests

    ref_ids = [json.loads(x)["id"] for x in ref.read_text().splitlines()]
    out_ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert out_ids == ref_ids == [f"r{i}" for i in range(n)]
    assert not (tmp_path / "out.failures.jsonl").exists()  # no record failed
    # Re-paid: at most the requests in flight at the kill (one budget of 4 for all workers).
    assert total_requests <= ref_requests + 4


def test_four_workers_hold_an_enforced_tpm_limit(ray_session: object) -> None:
    from ray_throughput import run_workers

    tpm = 300_000.0
    seen = {}
    for shared in (True, False):
        cfg = ServerConfig(latency=0.2, tpm=tpm)
        with serve_in_subprocess(cfg) as url:
            n = 200 if shared else 100  # the storm shows in fewer requests
            _, res = run_workers(url, 4, n, concurrency=100, shared=shared, tpm=tpm)
            st = fetch_stats(url)
        assert sum(r["lost"] for r in res) == 0, res
        seen[shared] = st.limited_429 / st.requests
        if shared:
            assert st.peak_concurrency <= 100  # --concurrency is the run's, not each worker's
            window = (st.last_admit or 0) - (st.first_admit or 0)
            used = st.charged_tokens / (tpm / 60 * (window + cfg.burst_seconds))
            assert used >= 0.8, used  # the limit is used, not only respected
    # The same workers each pacing to the full limit alone meet a storm of 429s; sharing one
    # budget they stay within it (~1% on an idle machine; a margin for a loaded CI runner).
    assert seen[False] > 0.3, seen
    assert seen[True] < 0.04, seen


# ---------------------------------------------------------------- the budget, without Ray


def test_a_429_seen_by_one_worker_cuts_the_limit_for_all() -> None:
    async def go() -> None:
        budget = Budget(8)
        a, b = SharedLimit(budget, 8), SharedLimit(budget, 8)
        ta = await a.acquire()
        assert budget.limit.in_flight == 1
        a.on_overload(ta)  # worker a sees a 429
        a.release(ta)
        a.flush()
        assert budget.limit.limit == 4.0
        held = [await b.acquire() for _ in range(4)]  # worker b: only the cut limit
        late = asyncio.ensure_future(b.acquire())
        await asyncio.sleep(0.05)
        assert not late.done()
        b.release(held[0])
        b.flush()
        await asyncio.wait_for(late, 1)

    asyncio.run(go())


def test_a_retry_after_pause_holds_every_workers_next_lease() -> None:
    async def go() -> None:
        budget = Budget(8, tpm=60_000)
        a = SharedPacer(budget, rpm=None, tpm=60_000, lease=1)
        b = SharedPacer(budget, rpm=None, tpm=60_000, lease=2)
        await asyncio.sleep(0.1)  # the bucket starts empty
        await b.acquire(10)  # leases two requests' worth
        a.pause(0.5)  # a 429 with retry-after: 0.5 seen by worker a
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await b.acquire(10)  # b's credit, taken before the 429: no wait
        assert loop.time() - t0 < 0.3
        await b.acquire(10)  # a new lease: waits out a's pause
        assert loop.time() - t0 >= 0.45

    asyncio.run(go())


def test_without_ray_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayUnavailable, match=r"realign\[ray\]"):
        require_ray()
    src = tmp_path / "in.jsonl"
    src.write_text(alpaca(1)[0] + "\n")
    res = runner.invoke(
        app,
        ["run", str(src), "-o", str(tmp_path / "o.jsonl"), "--backend", "fake", "--engine", "ray"],
    )
    assert res.exit_code == 2 and "realign[ray]" in res.output
