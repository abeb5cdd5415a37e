"""`--engine ray` against the loopback fake server: what Ray workers buy where cores exist, and
one enforced TPM limit shared by 4 workers.

Each Ray worker is a process with its own engine (the real default backend: aiohttp + orjson),
leasing slots and tokens from the run's shared budget actor (`realign.distributed.budget`), as
`realign run --engine ray` does. Workers start together at a wall-clock instant after a
warm-up request.

1. Engine only (structured requests, no pipeline) against a CPU-light endpoint (the fake
   server's lean mode: pre-encoded answers, its own CPU per request reported), so that the
   client is what limits the rate: the local engine, and Ray with 1 and 2 workers (`--workers`).
   For each: requests/s (and share of the endpoint's C/L), CPU ms per request in the client
   (each worker's process_time, summed), the budget actor, the rest of Ray (driver, daemons:
   the driver's process tree from /proc) and the endpoint (its /stats), how many cores this
   benchmark and other jobs kept busy, and the load before/after.
2. The expected client-bound rate on N cores from those costs (`ray_scaling.py` states the
   model), and the measured 2-worker/1-worker ratio against the model on this machine.
3. Optionally (`--pipeline N`) a whole `realign run` on N records, local vs Ray.
4. Share of an enforced TPM used by 4 workers sharing one budget (target >= 0.9, 0 lost,
   429s < 1% of requests); the same 4 workers each pacing to the full limit alone, to show
   what the shared budget prevents.

Run: .venv/bin/python benchmarks/ray_throughput.py [--requests 20000 --capacity 400
--latency 0.05 --workers 1,2 --pipeline 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    FAKE_KEY,
    Label,
    load_average,
    machine_busy_seconds,
    make_backend,
    make_request,
    process_tree_cpu,
    row,
)
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess
from ray_scaling import Measured, print_rows, print_scaling

from realign.llm.engine import Engine

HERE = Path(__file__).resolve().parent


def drive_worker(
    url: str,
    budget: Any | None,
    first: int,
    n: int,
    start_at: float,
    *,
    concurrency: int,
    tpm: float | None = None,
    max_tokens: int = 64,
    backend: str = "real",
    warm_up: bool = True,
) -> dict[str, Any]:
    """One worker: `n` structured requests from `start_at` (wall clock); with `budget`, drawing
    on the shared budget, else pacing alone to the full limits."""
    from realign.distributed.budget import share_budget

    async def go() -> dict[str, Any]:
        engine = Engine(make_backend(backend, url), concurrency=concurrency, tpm=tpm, cache=None)
        if budget is not None:
            share_budget(engine, budget, rpm=None, tpm=tpm)
        if warm_up:  # not under a TPM limit: it would count in the server's admitted window
            await engine.structured(make_request(-1 - first, max_tokens=max_tokens), Label)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        c0 = time.process_time()  # worker processes are reused: count this run only
        out = await asyncio.gather(
            *(
                engine.structured(make_request(first + i, max_tokens=max_tokens), Label)
                for i in range(n)
            ),
            return_exceptions=True,
        )
        ended, cpu = time.time(), time.process_time() - c0
        await engine.aclose()
        lost = [o for o in out if isinstance(o, BaseException)]
        return {
            "lost": len(lost),
            "first_error": repr(lost[0]) if lost else "",
            "rate_limited": engine.stats.rate_limited,
            "requests": engine.stats.requests,
            "ended": ended,
            "cpu_s": cpu,
            "pid": os.getpid(),
        }

    return asyncio.run(go())


def _launch(
    url: str,
    budget: Any | None,
    workers: int,
    requests: int,
    *,
    concurrency: int,
    tpm: float | None = None,
    max_tokens: int = 64,
    backend: str = "real",
) -> tuple[float, list[Any]]:
    """Start `requests` spread over `workers` Ray tasks (each its own worker process), all to
    begin at one instant; (that instant, the tasks' refs)."""
    import ray

    remote = ray.remote(num_cpus=0)(drive_worker)
    start_at = time.time() + 4.0  # every worker has imported, connected and warmed up by then
    share = -(-requests // workers)
    refs = [
        remote.remote(
            url,
            budget,
            w * share,
            min(share, requests - w * share),
            start_at,
            concurrency=concurrency if budget is not None else max(1, concurrency // workers),
            tpm=tpm,
            max_tokens=max_tokens,
            backend=backend,
            warm_up=tpm is None,
        )
        for w in range(workers)
    ]
    return start_at, refs


def run_workers(
    url: str,
    workers: int,
    requests: int,
    *,
    concurrency: int,
    shared: bool = True,
    tpm: float | None = None,
    max_tokens: int = 64,
    backend: str = "real",
) -> tuple[float, list[dict[str, Any]]]:
    """`requests` spread over `workers` Ray worker processes; (seconds, per-worker results)."""
    import ray

    from realign.distributed.budget import budget_actor

    budget = None
    if shared:
        budget = budget_actor(f"bench-{time.time_ns()}", concurrency, None, tpm)
    start_at, refs = _launch(
        url,
        budget,
        workers,
        requests,
        concurrency=concurrency,
        tpm=tpm,
        max_tokens=max_tokens,
        backend=backend,
    )
    results = ray.get(refs)
    if budget is not None:
        ray.kill(budget)
    return max(r["ended"] for r in results) - start_at, results


def _pid(_actor: Any) -> int:
    return os.getpid()


def measure_workers(
    url: str, workers: int, requests: int, *, concurrency: int, backend: str
) -> Measured:
    """Engine-only requests on `workers` Ray workers sharing one budget, and who paid the CPU:
    the workers (their process_time), the budget actor and the rest of the driver's process
    tree (/proc), the endpoint (its /stats)."""
    import ray

    from realign.distributed.budget import budget_actor

    budget = budget_actor(f"bench-{time.time_ns()}", concurrency, None, None)
    actor_pid = ray.get(budget.__ray_call__.remote(_pid))
    server0 = fetch_stats(url)
    start_at, refs = _launch(
        url, budget, workers, requests, concurrency=concurrency, backend=backend
    )
    time.sleep(max(0.0, start_at - time.time()))  # the warm-ups are done: count from here
    load0, tree0, busy0, t0 = (
        os.getloadavg()[0],
        process_tree_cpu(),
        machine_busy_seconds(),
        time.time(),
    )
    results = ray.get(refs)
    tree1, busy1, t1 = process_tree_cpu(), machine_busy_seconds(), time.time()
    server1 = fetch_stats(url)
    ray.kill(budget)
    spent = {pid: cpu - tree0.get(pid, 0.0) for pid, cpu in tree1.items()}
    pids = {r["pid"] for r in results}
    if len(pids) < workers:
        print(f"  (only {len(pids)} worker processes ran the {workers} workers' tasks)")
    client = sum(r["cpu_s"] for r in results)
    actor = spent.get(actor_pid, 0.0)
    server = server1.cpu_seconds - server0.cpu_seconds
    apart = {server1.pid, actor_pid, *pids}
    rest = sum(cpu for pid, cpu in spent.items() if pid not in apart)
    seconds = max(r["ended"] for r in results) - start_at
    return Measured(
        label=f"ray, {workers} worker{'s' if workers > 1 else ''}",
        workers=workers,
        requests=requests,
        seconds=seconds,
        window=t1 - t0,
        client_s=client,
        actor_s=actor,
        ray_s=rest,
        server_s=server,
        busy_cores=(busy1 - busy0) / (t1 - t0),
        load=(load0, os.getloadavg()[0]),
        lost=sum(r["lost"] for r in results),
    )


def measure_local(url: str, requests: int, *, concurrency: int, backend: str) -> Measured:
    """The same requests on one local engine in this process (before Ray starts)."""
    marks: dict[str, float] = {}

    async def go() -> None:
        engine = Engine(make_backend(backend, url), concurrency=concurrency, cache=None)
        await engine.structured(make_request(-1), Label)
        marks.update(load0=os.getloadavg()[0], busy0=machine_busy_seconds())
        marks.update(t0=time.perf_counter(), cpu0=time.process_time())
        await asyncio.gather(*(engine.structured(make_request(i), Label) for i in range(requests)))
        marks.update(t1=time.perf_counter(), cpu1=time.process_time())
        marks.update(busy1=machine_busy_seconds(), load1=os.getloadavg()[0])
        await engine.aclose()

    server0 = fetch_stats(url)
    asyncio.run(go())
    server1 = fetch_stats(url)
    seconds = marks["t1"] - marks["t0"]
    return Measured(
        label="local engine",
        workers=0,
        requests=requests,
        seconds=seconds,
        window=seconds,
        client_s=marks["cpu1"] - marks["cpu0"],
        actor_s=0.0,
        ray_s=0.0,
        server_s=server1.cpu_seconds - server0.cpu_seconds,
        busy_cores=(marks["busy1"] - marks["busy0"]) / seconds,
        load=(marks["load0"], marks["load1"]),
    )


def pipeline_run(url: str, work: Path, records: int, concurrency: int, *extra: str) -> float:
    """`realign run` (classify + rewrite of every record, `--force`) in a subprocess; seconds."""
    src = work / "in.jsonl"
    if not src.exists():
        src.write_text(
            "".join(
                json.dumps(
                    {
                        "instruction": f"Question {i}: who wrote book {i}?",
                        "output": f"Author {i} wrote book {i} in {1900 + i % 100}.",
                        "id": f"r{i}",
                    }
                )
                + "\n"
                for i in range(records)
            )
        )
    name = "ray" if extra else "local"
    argv = [sys.executable, "-m", "realign.cli.main", "run", str(src), "-o"]
    argv += [str(work / f"{name}.jsonl"), "--base-url", url, "--model", "gpt-4o-mini", "--force"]
    argv += ["--retrieval", "none", "--concurrency", str(concurrency), *extra]
    env = {**os.environ, "REALIGN_HOME": str(work / f"home-{name}"), "OPENAI_API_KEY": FAKE_KEY}
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_files(work: Path, name: str) -> tuple[str, str]:
    """The run's output and failures file, each record's provenance time and command blanked:
    the fields that differ between two runs by design (the command names the engine, output
    path and port)."""
    out = (work / f"{name}.jsonl").read_text(encoding="utf-8")
    failures = work / f"{name}.failures.jsonl"
    fails = failures.read_text(encoding="utf-8") if failures.exists() else ""
    out = re.sub(r'"time": ?"[^"]*"', '"time": ""', out)
    return re.sub(r'"command": ?"(?:[^"\\]|\\.)*"', '"command": ""', out), fails


def compare_outputs(local: tuple[str, str], other: tuple[str, str]) -> str:
    """'same output as local' (ids, order, statuses, every byte but the time and command), or
    where not."""
    if other == local:
        n = len(local[0].splitlines())
        return f"same output as local ({n} records, byte for byte but the time and command)"
    a, b = local[0].splitlines(), other[0].splitlines()
    if len(a) != len(b):
        return f"DIFFERENT from local: {len(b)} records vs {len(a)}"
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return f"DIFFERENT from local at output line {i + 1}"
    return "DIFFERENT from local: the failures files differ"


def init_ray(cpus: int) -> None:
    import ray

    path = os.pathsep.join([str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--capacity", type=int, default=400, help="the endpoint's C (at once)")
    ap.add_argument("--latency", type=float, default=0.05, help="the endpoint's L (seconds)")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to measure")
    ap.add_argument("--tpm", type=float, default=600_000)
    ap.add_argument("--tpm-requests", type=int, default=2000)
    ap.add_argument("--backend", default="real")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-tpm", action="store_true")
    ap.add_argument(
        "--pipeline",
        type=int,
        default=0,
        metavar="N",
        help="also time `realign run` on N records, local vs --engine ray (joining this cluster)",
    )
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    concurrency = int(1.5 * args.capacity)
    ideal = args.capacity / args.latency
    print(f"machine: {cores} cores, load {load_average()}, backend={args.backend}")
    if args.skip_throughput:
        init_ray(cpus=max(4, cores))
    else:
        print(
            f"1. engine only: {args.requests} structured requests, lean endpoint C={args.capacity}, "
            f"L={args.latency}s (C/L = {ideal:.0f}/s), client concurrency {concurrency} in total"
        )
        lean = ServerConfig(latency=args.latency, capacity=args.capacity, lean=True)
        with serve_in_subprocess(lean) as url:
            local = measure_local(url, args.requests, concurrency=concurrency, backend=args.backend)
            init_ray(cpus=max(4, cores))  # after the local engine: Ray's daemons idle meanwhile
            rays = [
                measure_workers(
                    url, w, args.requests, concurrency=concurrency, backend=args.backend
                )
                for w in (int(x) for x in args.workers.split(","))
            ]
        print_rows([local, *rays], ideal)
        print(
            "  client: the engine process(es); actor: the budget actor; ray: the driver and Ray's "
            "daemons; server: the fake endpoint; cores: busy on average (ours incl. the endpoint)"
        )
        print_scaling(local, rays, ideal, cores)
    if args.pipeline:
        import ray

        address = ray.get_runtime_context().gcs_address
        print(
            f"3. realign run, {args.pipeline} records (classify, and rewrite where the type's "
            f"criterion says so: requests counted by the server), C={args.capacity}, "
            f"L={args.latency}s; seconds include start-up (the ray runs join this cluster)"
        )
        cfg = ServerConfig(latency=args.latency, capacity=args.capacity, lean=True)
        with serve_in_subprocess(cfg) as url, tempfile.TemporaryDirectory() as tmp:
            runs = [("local engine", ())] + [
                (
                    f"ray, {w} worker(s)",
                    ("--engine", "ray", "--workers", str(w), "--address", address),
                )
                for w in (int(x) for x in args.workers.split(","))
            ]
            local: tuple[str, str] | None = None
            for label, extra in runs:
                work = Path(tmp) / label.replace(" ", "_").replace(",", "")
                work.mkdir()
                sent = fetch_stats(url).requests
                seconds = pipeline_run(url, work, args.pipeline, concurrency, *extra)
                sent = fetch_stats(url).requests - sent
                rps = sent / seconds
                files = run_files(work, "ray" if extra else "local")
                same = "" if local is None else f", {compare_outputs(local, files)}"
                local = local or files
                row(
                    label,
                    f"{seconds:.1f} s",
                    f"{sent} requests, {rps:.0f} req/s, share {rps / ideal:.3f}{same}",
                )
    if args.skip_tpm:
        return
    print(
        f"4. enforced TPM {args.tpm:,.0f}: {args.tpm_requests} requests (64 max_tokens), 4 workers"
    )
    for mode, shared in (("one shared budget", True), ("each worker alone", False)):
        cfg = ServerConfig(latency=0.2, tpm=args.tpm)
        with serve_in_subprocess(cfg) as url:
            elapsed, res = run_workers(
                url, 4, args.tpm_requests, concurrency=200, shared=shared, tpm=args.tpm
            )
            st = fetch_stats(url)
        window = (st.last_admit or 0) - (st.first_admit or 0)
        most = args.tpm / 60 * (window + cfg.burst_seconds)
        lost = sum(r["lost"] for r in res)
        print(f" {mode}:")
        row("share of the limit used", f"{st.charged_tokens / most:.3f}", "(target >= 0.9)")
        row(
            "429s / requests",
            f"{st.limited_429} / {st.requests} ({st.limited_429 / max(st.requests, 1):.2%})",
            "(target < 1%)",
        )
        row("lost requests", f"{lost}", "(target 0)")
        row("elapsed", f"{elapsed:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
