"""`realign run --engine ray` on two Ray nodes (`ray.cluster_utils.Cluster`, on one machine):
workers on the second node never open the SQLite cache or the run state, one budget holds for
both nodes, and losing the second node mid-run loses and duplicates no record.

Each node has 1 CPU and each of the 2 workers asks for 2/3 of one, so one worker lands on each
node; the run's budget, cache and key actors are pinned to the driver's (head) node. Every Ray
worker process of the test's job runs `node_audit.install`, which logs the files it opens and
its connections to the stub server, per node and process.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from book_records import alpaca
from packs import write_pack
from subprocess_runs import records_done
from typer.testing import CliRunner

from realign.cli.main import app
from realign.pipeline.state import state_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.block_network(allowed_hosts=["127.0.0.1"])]

N = 300  # records
CONCURRENCY = 6  # the run's --concurrency: each worker's engine alone would take as many
KILL_AT = 64  # records committed before the second node is removed


class TwoNodes:
    def __init__(self, cluster: Any, second: Any, audit: Path, watch: Path, url: str) -> None:
        self.cluster, self.second, self.audit, self.watch, self.url = (
            cluster,
            second,
            audit,
            watch,
            url,
        )

    def logs(self, node_id: str) -> dict[str, list[str]]:
        """The audit lines of each Ray worker process of `node_id`, by file name."""
        return {
            p.name: p.read_text().splitlines() for p in self.audit.glob(f"{node_id}-*.log")
        }


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    import ray
    from ray.cluster_utils import Cluster

    # Ray's own folder (and its `ray_current_cluster` file): short, for its socket paths, and
    # this module's only, so no other Ray session on the machine is touched.
    ray_tmp = tempfile.mkdtemp(prefix="rn", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    audit = tmp_path_factory.mktemp("audit")
    watch = tmp_path_factory.mktemp("run")  # the driver's REALIGN_HOME, input and output
    cluster = Cluster()
    server = serve_in_subprocess(ServerConfig(latency=0.05, seed=1))
    try:
        url = server.__enter__()
        os.makedirs(os.path.join(ray_tmp, "ray"))  # Ray's default folder under RAY_TMPDIR
        cluster.add_node(num_cpus=1, include_dashboard=False)
        second = cluster.add_node(num_cpus=1)
        path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")])
        env = {
            "PYTHONPATH": path,
            "NODE_AUDIT_DIR": str(audit),
            "NODE_AUDIT_WATCH": str(watch),
            "NODE_AUDIT_PORT": str(urlparse(url).port),
        }
        ray.init(
            address=cluster.address,
            namespace="realign",
            log_to_driver=False,
            runtime_env={"env_vars": env, "worker_process_setup_hook": "node_audit.install"},
        )
        yield TwoNodes(cluster, second, audit, watch, url)
    finally:
        ray.shutdown()
        cluster.shutdown()
        server.__exit__(None, None, None)
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_losing_the_second_node_loses_nothing_and_it_never_opened_the_cache_or_state(
    two_nodes: TwoNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    head_id = ray.get_runtime_context().get_node_id()
    second_id = two_nodes.second.node_id
    assert head_id != second_id  # the driver is on the head node
    run = two_nodes.watch
    home = run / "home"
    monkeypatch.setenv("REALIGN_HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-nodes-123456")
    src, out = run / "in.jsonl", run / "out.jsonl"
    src.write_text("\n".join(alpaca(N)) + "\n")
    pack = write_pack(run / "pack")

    seen: dict[str, Any] = {}

    def second_node_sent_requests() -> bool:
        logs = two_nodes.logs(second_id).values()
        return any(line.startswith("connect ") for lines in logs for line in lines)

    def remove_second_node() -> None:
        # Once some records are done and the second node's worker is at work (on a loaded
        # machine its process may start late).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            records_done(out) >= KILL_AT and second_node_sent_requests()
        ):
            time.sleep(0.02)
        seen["done_at_kill"] = records_done(out)
        seen["second_logs"] = two_nodes.logs(second_id)  # before its processes go
        two_nodes.cluster.remove_node(two_nodes.second)

    killer = threading.Thread(target=remove_second_node, daemon=True)
    killer.start()
    argv = [
        "run", str(src), "-o", str(out), "--pack", str(pack),
        "--base-url", two_nodes.url, "--model", "gpt-4o-mini",
        "--concurrency", str(CONCURRENCY), "--engine", "ray", "--workers", "2",
    ]  # fmt: skip
    t0 = time.monotonic()
    res = CliRunner().invoke(app, argv)
    elapsed = time.monotonic() - t0
    killer.join(30)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"

    # (3) The node went mid-run; its blocks were done by the head node's worker: every record
    # once, in input order, none failed.
    assert KILL_AT <= seen["done_at_kill"] < N, (seen["done_at_kill"], elapsed)
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(N)]
    assert not (run / "out.failures.jsonl").exists()

    # (1) The second node's worker did requests (so it ran there, with the audit hook), and
    # none of its processes opened the cache, the run state, or anything of the driver's.
    second = [line for lines in seen["second_logs"].values() for line in lines]
    assert any(line.startswith("connect ") for line in second), seen["second_logs"]
    opened = [line for line in second if line.startswith(("open ", "sqlite "))]
    assert opened == [], opened
    # The audit does see SQLite opens: the head node's cache actor opened the driver's cache.
    head = [line for lines in two_nodes.logs(head_id).values() for line in lines]
    cache = str(home / "cache.sqlite")
    assert f"sqlite {cache}" in head or f"open {cache}" in head, head
    assert not any(str(state_path(out)) in line for line in head + second)  # the driver's own

    # (2) One budget for both nodes: the stub never saw more requests at once than the run's
    # --concurrency (each worker's engine alone would have taken as many).
    stats = fetch_stats(two_nodes.url)
    assert stats.peak_concurrency <= CONCURRENCY, stats
    assert stats.requests >= N  # one rewrite per record, re-sent ones included


def test_a_dead_workers_budget_slots_are_reclaimed() -> None:
    """Without Ray: slots a worker leased and never gave back (it died) return to the budget
    when the driver reclaims them (after the longest time a request could still be running at
    the provider), and its late or stray messages change nothing."""
    import asyncio

    from realign.distributed.budget import Budget

    async def go() -> None:
        budget = Budget(4)
        dead, _ = await budget.lease(3, owner="worker-1")
        alive, _ = await budget.lease(3, owner="worker-0")
        assert len(dead) == 3 and len(alive) == 1 and budget.limit.in_flight == 4
        t0 = time.monotonic()
        assert await budget.reclaim("worker-1", timeout=0.2) == 3
        assert time.monotonic() - t0 >= 0.2  # its requests may still be at the provider
        assert budget.limit.in_flight == 1
        budget.release(dead, owner="worker-1")  # sent before it died, arriving late
        assert budget.limit.in_flight == 1
        more, _ = await budget.lease(8, owner="worker-0")
        assert len(more) == 3  # the survivor gets the whole budget back
        budget.release(alive + more, owner="worker-0")
        assert budget.limit.in_flight == 0
        late, _ = await budget.lease(2, owner="worker-1")  # a lease it had asked for
        assert late == [] and budget.limit.in_flight == 0

    asyncio.run(asyncio.wait_for(go(), 10))
