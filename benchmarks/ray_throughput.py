"""`--engine ray` against the loopback fake server: throughput with 1, 2 and 4 workers vs the
local engine, and one enforced TPM limit shared by 4 workers.

Each Ray worker is a process with its own engine (the real OpenAI backend), leasing slots and
tokens from the run's shared budget actor (`realign.distributed.budget`), as `realign run
--engine ray` does. Workers start together at a wall-clock instant after a warm-up request.

1. Share of endpoint capacity: requests/s over C/L with a server of capacity C and latency L
   (target: more workers beat one client process, which is CPU-bound at ~2.5 ms a request).
2. Share of an enforced TPM used by 4 workers sharing one budget (target >= 0.9, 0 lost,
   429s < 1% of requests); the same 4 workers each pacing to the full limit alone, to show
   what the shared budget prevents.

Run: .venv/bin/python benchmarks/ray_throughput.py [--requests 8000 --capacity 400 --latency 0.5]
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

from common import FAKE_KEY, Label, load_average, make_backend, make_request, row
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess

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
        }

    return asyncio.run(go())


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
            concurrency=concurrency if shared else max(1, concurrency // workers),
            tpm=tpm,
            max_tokens=max_tokens,
            backend=backend,
            warm_up=tpm is None,
        )
        for w in range(workers)
    ]
    results = ray.get(refs)
    if budget is not None:
        ray.kill(budget)
    return max(r["ended"] for r in results) - start_at, results


async def local_engine(url: str, requests: int, concurrency: int, backend: str) -> float:
    engine = Engine(make_backend(backend, url), concurrency=concurrency, cache=None)
    await engine.structured(make_request(-1), Label)
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.structured(make_request(i), Label) for i in range(requests)))
    elapsed = time.perf_counter() - t0
    await engine.aclose()
    return elapsed


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
    """The run's output and failures file, each record's provenance time blanked: the one
    field two runs of the same command never share."""
    out = (work / f"{name}.jsonl").read_text(encoding="utf-8")
    failures = work / f"{name}.failures.jsonl"
    fails = failures.read_text(encoding="utf-8") if failures.exists() else ""
    return re.sub(r'"time": ?"[^"]*"', '"time": ""', out), fails


def compare_outputs(local: tuple[str, str], other: tuple[str, str]) -> str:
    """'same output as local' (ids, order, statuses, every byte but the time), or where not."""
    if other == local:
        n = len(local[0].splitlines())
        return f"same output as local ({n} records, byte for byte but the time)"
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
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=8000)
    ap.add_argument("--capacity", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--workers", default="1,2,4")
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
    init_ray(cpus=max(4, os.cpu_count() or 1))
    concurrency = int(1.5 * args.capacity)
    ideal = args.capacity / args.latency
    print(f"machine: {os.cpu_count()} cores, load {load_average()}, backend={args.backend}")
    if not args.skip_throughput:
        print(
            f"1. capacity share: {args.requests} requests, C={args.capacity}, L={args.latency}s "
            f"(C/L = {ideal:.0f}/s), client concurrency {concurrency} in total"
        )
        cfg = ServerConfig(latency=args.latency, capacity=args.capacity)
        with serve_in_subprocess(cfg) as url:
            c0 = time.process_time()
            elapsed = asyncio.run(local_engine(url, args.requests, concurrency, args.backend))
            rps = args.requests / elapsed
            cpu = (time.process_time() - c0) / args.requests * 1000
            row(
                "local engine",
                f"{rps:.0f} req/s",
                f"share {rps / ideal:.3f}, CPU {cpu:.2f} ms/request",
            )
            for w in (int(x) for x in args.workers.split(",")):
                elapsed, res = run_workers(
                    url, w, args.requests, concurrency=concurrency, backend=args.backend
                )
                rps = args.requests / elapsed
                lost = sum(r["lost"] for r in res)
                cpu = sum(r["cpu_s"] for r in res) / args.requests * 1000
                row(
                    f"ray, {w} worker(s)",
                    f"{rps:.0f} req/s",
                    f"share {rps / ideal:.3f}, lost {lost}, workers' CPU {cpu:.2f} ms/request",
                )
    if args.pipeline:
        import ray

        address = ray.get_runtime_context().gcs_address
        print(
            f"1b. realign run, {args.pipeline} records (classify + rewrite: "
            f"{2 * args.pipeline} requests), C={args.capacity}, L={args.latency}s; "
            "seconds include start-up (the ray runs join this cluster, no Ray start)"
        )
        cfg = ServerConfig(latency=args.latency, capacity=args.capacity)
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
                seconds = pipeline_run(url, work, args.pipeline, concurrency, *extra)
                rps = 2 * args.pipeline / seconds
                files = run_files(work, "ray" if extra else "local")
                same = "" if local is None else f", {compare_outputs(local, files)}"
                local = local or files
                row(label, f"{seconds:.1f} s", f"{rps:.0f} req/s, share {rps / ideal:.3f}{same}")
    if args.skip_tpm:
        return
    print(
        f"2. enforced TPM {args.tpm:,.0f}: {args.tpm_requests} requests (64 max_tokens), 4 workers"
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
