"""Throughput at the server's capacity: N structured requests, capacity C, latency L.

The ideal is C/L requests/s (the server is the bottleneck); target ≥ 0.9 of it.
Run: .venv/bin/python benchmarks/throughput.py [--requests 5000 --capacity 200 --latency 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import (
    BACKENDS,
    Label,
    cpu_seconds,
    load_average,
    make_backend,
    make_request,
    peak_rss_mb,
    row,
)
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess

from realign.llm.engine import Engine


async def run(args: argparse.Namespace, url: str) -> tuple[float, float, Engine]:
    backend = make_backend(args.backend, url)
    engine = Engine(backend, concurrency=args.concurrency or int(1.5 * args.capacity), cache=None)
    # One request first: imports and client set-up are start-up cost, not throughput.
    await engine.structured(make_request(-1), Label)
    t0, c0 = time.perf_counter(), cpu_seconds()
    results = await asyncio.gather(
        *(engine.structured(make_request(i), Label) for i in range(args.requests)),
        return_exceptions=True,
    )
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"  {len(failed)} requests failed, first: {failed[0]!r}")
    await engine.aclose()
    return elapsed, cpu, engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--capacity", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="engine concurrency (default: 1.5 x capacity, so the server never waits for the client to refill a slot; pass --concurrency C to see the ratio when the client holds exactly C)",
    )
    ap.add_argument("--backend", choices=BACKENDS, default="real")
    args = ap.parse_args()
    cfg = ServerConfig(latency=args.latency, capacity=args.capacity)
    with serve_in_subprocess(cfg) as url:
        elapsed, cpu, engine = asyncio.run(run(args, url))
        server = fetch_stats(url)
    rps = args.requests / elapsed  # the warm-up request is not counted
    ideal = args.capacity / args.latency
    print(
        f"throughput: {args.requests} requests, C={args.capacity}, L={args.latency}s, backend={args.backend}"
    )
    row("elapsed", f"{elapsed:.2f} s")
    row("requests/s", f"{rps:.1f}")
    row("ratio to C/L", f"{rps / ideal:.3f}", f"(C/L = {ideal:.0f}/s, target >= 0.9)")
    row("client concurrency", f"{args.concurrency or int(1.5 * args.capacity)}")
    row("server peak concurrency", f"{server.peak_concurrency}")
    row("completed / failed", f"{engine.stats.completed} / {engine.stats.errors}")
    row(
        "client CPU per request",
        f"{cpu / max(engine.stats.completed, 1) * 1000:.2f} ms",
        f"(CPU-bound ceiling {engine.stats.completed / max(cpu, 1e-9):.0f} req/s on one core)",
    )
    row("machine load", load_average())
    row("client peak RSS", f"{peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
