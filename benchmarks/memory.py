"""Peak memory of `realign run` at 10k and 100k records: it must not grow with the dataset.

Runs the real command line (`realign run … --base-url` pointing at the local fake server) in a
subprocess and reads its peak RSS from the kernel (wait4). Records carry a task type
(`category`), so classification needs no request; one record in `--rewrite-every` is of a
rewritten type (`--tasks`), so the engine and writer work on every run while 100k records stay
affordable on 2 cores. Target: peak RSS ratio 100k / 10k <= 1.25.

`--engine ray`: the same with `--engine ray --workers 2`, joining a local Ray this script starts
(so the peak is the driver's own, not that of the Ray processes a local start would fork).
Run: .venv/bin/python benchmarks/memory.py [--sizes 10000,100000 --rewrite-every 10]
     [--engine ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import FAKE_KEY, load_average, row
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess

REWRITTEN = "email_generation"
PASSED_THROUGH = ["advice_giving", "open_qa", "planning", "story_generation"]


def write_dataset(path: Path, n: int, rewrite_every: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            cat = REWRITTEN if i % rewrite_every == 0 else PASSED_THROUGH[i % len(PASSED_THROUGH)]
            rec = {
                "id": f"r{i}",
                "input": "",
                "instruction": f"Write a short email to colleague {i} about the meeting on topic {i % 97}.",
                "output": f"Hi {i},\n\nThe meeting is moved to Thursday. "
                + "Details follow. " * 20,
                "category": cat,
            }
            f.write(json.dumps(rec) + "\n")


def run_once(
    url: str, n: int, rewrite_every: int, concurrency: int, work: Path, *extra: str
) -> tuple[float, float, int]:
    data = work / f"data_{n}.jsonl"
    out = work / f"out_{n}.jsonl"
    write_dataset(data, n, rewrite_every)
    realign = shutil.which("realign") or str(Path(os.sys.executable).with_name("realign"))  # type: ignore[attr-defined]
    cmd = [
        realign,
        "run",
        str(data),
        "-o",
        str(out),
        "--base-url",
        url,
        "--model",
        "gpt-4o-mini",
        "--retrieval",
        "none",
        "--tasks",
        REWRITTEN,
        "--concurrency",
        str(concurrency),
        *extra,
    ]
    env = {**os.environ, "OPENAI_API_KEY": FAKE_KEY, "REALIGN_HOME": str(work / f"home_{n}")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    stderr = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"realign run failed ({n} records):\n{stderr[-3000:]}")
    lines = sum(1 for _ in out.open(encoding="utf-8"))
    failures = out.with_name(out.stem + ".failures.jsonl")
    failed = sum(1 for _ in failures.open(encoding="utf-8")) if failures.exists() else 0
    if lines + failed != n:
        raise SystemExit(f"{n} records in, {lines} out + {failed} failures")
    return usage.ru_maxrss / 1024.0, elapsed, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--rewrite-every", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--engine", choices=["local", "ray"], default="local")
    args = ap.parse_args()
    extra: list[str] = []
    if args.engine == "ray":
        import ray

        here = str(Path(__file__).resolve().parents[1] / "src")
        path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
        ctx = ray.init(
            num_cpus=3,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        address = ctx.address_info["gcs_address"]
        extra = ["--engine", "ray", "--workers", "2", "--address", address]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"memory: realign run --engine {args.engine} on {sizes} records, "
        f"1 in {args.rewrite_every} rewritten, fake server"
    )
    print(f"  machine load {load_average()}")
    peaks: list[float] = []
    with tempfile.TemporaryDirectory() as d, serve_in_subprocess(ServerConfig()) as url:
        for n in sizes:
            before = fetch_stats(url).requests
            peak, elapsed, failed = run_once(
                url, n, args.rewrite_every, args.concurrency, Path(d), *extra
            )
            sent = fetch_stats(url).requests - before
            peaks.append(peak)
            row(
                f"{n:,} records: peak RSS",
                f"{peak:,.0f} MB",
                f"{elapsed:.0f} s, {sent:,} requests, {failed} failures",
            )
    if len(peaks) >= 2:
        row(
            f"ratio {sizes[-1]:,} / {sizes[0]:,}", f"{peaks[-1] / peaks[0]:.3f}", "(target <= 1.25)"
        )


if __name__ == "__main__":
    main()
