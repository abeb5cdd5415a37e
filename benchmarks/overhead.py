"""Client overhead: a zero-latency server, so requests/s measures the client side alone.

Runs each backend (the real one users run, plus lower layers to show where time goes) and an
engine-only line (in-process FakeBackend: no HTTP at all).
Run: .venv/bin/python benchmarks/overhead.py [--requests 3000 --concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import BACKENDS, Label, cpu_seconds, load_average, make_backend, make_request, row
from fake_openai_server import ServerConfig, serve_in_subprocess

from realign.llm.engine import Engine
from realign.llm.fake import FakeBackend


async def measure(backend: object, n: int, concurrency: int) -> tuple[float, float, int]:
    engine = Engine(backend, concurrency=concurrency)  # type: ignore[arg-type]
    # Warm up (imports, connections) outside the measurement.
    await asyncio.gather(
        *(engine.structured(make_request(-i - 1), Label) for i in range(concurrency))
    )
    requests = [make_request(i) for i in range(n)]
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = await asyncio.gather(
        *(engine.structured(r, Label) for r in requests), return_exceptions=True
    )
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    await engine.aclose()
    return elapsed, cpu, sum(isinstance(o, BaseException) for o in out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    args = ap.parse_args()
    print(
        f"client overhead: {args.requests} requests, zero-latency server, concurrency {args.concurrency}"
    )
    print(f"  machine load {load_average()}")
    elapsed, cpu, failed = asyncio.run(
        measure(FakeBackend(model="fake"), args.requests, args.concurrency)
    )
    row(
        "engine only (in-process fake)",
        f"{args.requests / elapsed:,.0f} req/s",
        f"{cpu / args.requests * 1e3:.2f} ms CPU/request",
    )
    with serve_in_subprocess(ServerConfig()) as url:
        for kind in args.backends.split(","):
            elapsed, cpu, failed = asyncio.run(
                measure(make_backend(kind, url), args.requests, args.concurrency)
            )
            note = f"{cpu / args.requests * 1e3:.2f} ms CPU/request" + (
                f", {failed} FAILED" if failed else ""
            )
            row(f"backend {kind}", f"{args.requests / elapsed:,.0f} req/s", note)


if __name__ == "__main__":
    main()
