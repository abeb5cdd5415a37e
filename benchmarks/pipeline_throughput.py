"""Records-level throughput of `realign run`'s pipeline at the server's capacity.

N alpaca-style records without a task type (so each one costs one classify request and one
rewrite request) go through `realign.pipeline.record.run_records`, the loop `realign run` drives,
with realign's `OpenAIBackend` (what users run) and the request cache on, against the local
fake server (capacity C, latency L). The criteria pack is a tiny one written to a temporary
folder in which every type says `rewrite: yes`, so every record reaches the rewrite stage
whatever type the server's filled-in answer names. (The server's rewrite is 8 characters,
so the filter keeps the original: outcome `kept`; the requests are what is measured.)

The ideal is C/L requests/s (the server is the bottleneck); target: requests/s ≥ 0.9 of it.
Run: .venv/bin/python benchmarks/pipeline_throughput.py [--records 5000 --capacity 200 --latency 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import FAKE_KEY, cpu_seconds, load_average, peak_rss_mb, row
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess

from realign.criteria import load_pack
from realign.io.read import read_records
from realign.llm.cache import Cache
from realign.llm.engine import Engine
from realign.llm.openai_backend import OpenAIBackend
from realign.pipeline.record import RunOptions, RunSummary, Stages, run_records
from realign.pipeline.state import RunState, state_path
from realign.records import Failure, Record

PACK_TYPES = {
    "open_qa": "Questions about facts of the world answered from knowledge.",
    "math_puzzles": "Arithmetic and word problems solved step by step.",
    "email_generation": "Write an email.",
    "planning": "Make a plan, schedule or itinerary.",
    "default": "Anything that fits no other type.",
}
PACK_FILE = """---
name: {name}
group: benchmark
description: {desc}
rewrite: yes
retrieval: no
examples:
{examples}
---
Start with a direct answer, then explain in a short numbered list.
"""


def write_pack(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, desc in PACK_TYPES.items():
        examples = "\n".join(f"  - example {i} for {name}" for i in range(8))
        (folder / f"{name}.md").write_text(
            PACK_FILE.format(name=name, desc=desc, examples=examples), encoding="utf-8"
        )
    return folder


def write_dataset(path: Path, n: int, first: int = 0) -> None:
    """Alpaca records with an empty `input` and no `category`: the LLM classifies each one."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(first, first + n):
            rec = {
                "instruction": f"Explain how topic {i % 97} relates to question number {i}.",
                "input": "",
                "output": f"Topic {i % 97} matters for question {i} because "
                + "it connects several ideas that build on each other. " * 12,
            }
            f.write(json.dumps(rec) + "\n")


async def run(
    args: argparse.Namespace, url: str, work: Path
) -> tuple[float, float, Engine, RunSummary]:
    data = work / "data.jsonl"
    write_dataset(data, args.records)
    pack = load_pack(str(write_pack(work / "pack")))
    backend = OpenAIBackend(model="gpt-4o-mini", base_url=url, api_key=FAKE_KEY)
    cache = None if args.no_cache else Cache(work / "cache.sqlite")
    engine = Engine(backend, concurrency=args.concurrency or int(1.5 * args.capacity), cache=cache)
    stages = Stages(
        pack=pack,
        engine=engine,
        options=RunOptions(),
        model=backend.model,
        backend=backend.name,
    )
    window = max(4 * engine.limit.maximum, 16)  # as `realign run` sizes it (runtime.py)

    def items(path: Path) -> Iterator[Record | Failure]:
        for item in read_records(path):  # lazily, as `realign run` reads
            assert isinstance(item, Record), item
            yield item

    # One record first, outside the measurement: imports and client set-up are start-up cost.
    warm_data = work / "warm.jsonl"
    write_dataset(warm_data, 1, first=args.records)
    warm_state = RunState(state_path(work / "warm-out.jsonl"), "warm-up")
    await run_records(stages, items(warm_data), warm_state, RunSummary(), window=window)
    warm_state.close(remove=True)
    engine.stats.by_stage.clear()
    engine.stats.requests = 0

    state = RunState(state_path(work / "out.jsonl"), "benchmark")
    summary = RunSummary()
    t0, c0 = time.perf_counter(), cpu_seconds()
    await run_records(stages, items(data), state, summary, window=window)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    state.close(remove=True)
    await engine.aclose()
    if cache is not None:
        cache.close()
    return elapsed, cpu, engine, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--capacity", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="engine concurrency (default: 1.5 x capacity, so the server never waits for the client to refill a slot; pass --concurrency C to see the ratio when the client holds exactly C)",
    )
    ap.add_argument("--no-cache", action="store_true", help="run without the request cache")
    args = ap.parse_args()
    cfg = ServerConfig(latency=args.latency, capacity=args.capacity)
    with tempfile.TemporaryDirectory() as tmp, serve_in_subprocess(cfg) as url:
        elapsed, cpu, engine, summary = asyncio.run(run(args, url, Path(tmp)))
        server = fetch_stats(url)
    st = engine.stats
    ideal = args.capacity / args.latency
    rps = st.requests / elapsed
    print(
        f"pipeline throughput: {args.records} records, C={args.capacity}, L={args.latency}s, "
        f"cache={'off' if args.no_cache else 'on'}"
    )
    row("elapsed", f"{elapsed:.2f} s")
    row("records/s", f"{summary.read / elapsed:.1f}", f"(ideal {ideal / 2:.0f}/s: 2 requests each)")
    for stage, n in sorted(st.by_stage.items()):
        row(f"requests/s {stage}", f"{n / elapsed:.1f}", f"({n} requests)")
    row("requests/s total", f"{rps:.1f}")
    row("ratio to C/L", f"{rps / ideal:.3f}", f"(C/L = {ideal:.0f}/s, target >= 0.9)")
    row("client concurrency", f"{args.concurrency or int(1.5 * args.capacity)}")
    row("server peak concurrency", f"{server.peak_concurrency}")
    row(
        "outcomes",
        " ".join(f"{k}={v}" for k, v in sorted(summary.statuses.items())),
        f"failed={summary.failed}",
    )
    row(
        "client CPU per request",
        f"{cpu / max(st.requests, 1) * 1000:.2f} ms",
        f"(CPU-bound ceiling {st.requests / max(cpu, 1e-9):.0f} req/s on one core)",
    )
    row("machine load", load_average())
    row("client peak RSS", f"{peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
