"""realign against curator (bespokelabs-curator) in the same run, on the same fake endpoint.

Each tool gets a fresh loopback fake server (`fake_openai_server.py`) and the same N
one-request records: for realign the full `realign run` command line (read, state, rewrite
request, filter, output), every record of a type it rewrites and given its task type, so each
record is one structured request; for curator an `LLM` subclass with a structured
`response_format` over the same instructions, in curator's own Python environment (a
subprocess: curator pins packages of its own). Both get the same concurrency bound and no
rate limit of their own (the endpoint's capacity is the limit).

Printed per tool: requests/s over the sending window and that rate's share of the endpoint's
capacity C/L. The window runs from the first request of the tool's burst to the last answer
the server gave: start-up and final writes are outside it, and so are the tool's probe
requests, the same way for both. A probe is a request the client sent alone, the next one
only after it was answered. curator sends separate probes at start-up to read the
rate-limit headers. realign sends its first record alone while no limit is known, for the
same reason. The rate from the very first request, probes included, is printed too. So is
the wall-clock time of the whole command; the client's CPU time per request; and the
machine's load average before and after, since other work on the machine lowers every figure. With --latency 0 the rate is
overhead-bound (the client's CPU per request). Read the window rates with this in mind:
curator builds every request (and its requests file) before it sends the first, outside its
window; realign reads, renders, filters and commits records while it sends, inside it. The
whole command's time and CPU per record compare the same work.

Set-up (once): `python3.11 -m venv /work/bench-venv && /work/bench-venv/bin/pip install
bespokelabs-curator==0.1.31`. curator counts tokens with tiktoken; its encoding files come
from realign's offline copy (TIKTOKEN_CACHE_DIR, see realign.tokens), so no network is used.
Run: python benchmarks/vs_curator.py --curator-python /work/bench-venv/bin/python
     [--records 5000 --capacity 200 --latency 0.5 --concurrency 300] [--ceiling]
(`--ceiling` also runs a bare aiohttp loop against the same endpoint: what any client can
reach there, the server's own event loop sharing the machine's cores.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import FAKE_KEY, load_average, row
from fake_openai_server import ServerConfig, Stats, fetch_stats, serve_in_subprocess

REWRITTEN = "email_generation"
MODEL = "gpt-4o-mini"

CURATOR_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pydantic import BaseModel
    from bespokelabs import curator

    data, url, key, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class Rewrite(BaseModel):
        reasoning: str
        fits_format: bool
        revised_response: str

    class Rewriter(curator.LLM):
        response_format = Rewrite

        def prompt(self, row):
            return (
                "Rewrite the response to fit the format criterion.\\n"
                f"Instruction: {row['instruction']}\\nResponse: {row['output']}"
            )

        def parse(self, row, response):
            return [{"id": row["id"], "revised": response.revised_response}]

    rows = [json.loads(line) for line in open(data, encoding="utf-8")]
    llm = Rewriter(
        model_name="__MODEL__",
        backend="openai",
        backend_params={
            "base_url": url,
            "api_key": key,
            "max_concurrent_requests": concurrency,
            "max_requests_per_minute": 100_000_000,
            "max_tokens_per_minute": 100_000_000_000,
            "max_retries": 3,
        },
    )
    out = llm(rows)
    print(json.dumps({"rows": len(out.dataset)}))
    """
).replace("__MODEL__", MODEL)


def write_dataset(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            rec = {
                "id": f"r{i}",
                "instruction": f"Write a short email to colleague {i} about the meeting on topic {i % 97}.",
                "input": "",
                "output": f"Hi {i},\n\nThe meeting is moved to Thursday. " + "Details follow. " * 20,
                "category": REWRITTEN,
            }
            f.write(json.dumps(rec) + "\n")


def tiktoken_cache(work: Path) -> Path:
    """A TIKTOKEN_CACHE_DIR holding cl100k_base, from realign's bundled offline copy."""
    cache = work / "tiktoken"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    from realign import tokens

    tokens.count("warm up")  # copies the encoding file into the cache folder
    return cache


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Wall seconds of the command; raises with its stderr when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, check=False, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-3000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd[:3])} …\n{tail}")
    return wall


def children_cpu() -> float:
    ru = os.times()
    return ru.children_user + ru.children_system


def run_tool(cmd: list[str], env: dict[str, str], cfg: ServerConfig) -> dict[str, float]:
    with serve_in_subprocess(cfg) as url:
        full = [part.replace("{URL}", url) for part in cmd]
        cpu0 = children_cpu()
        wall = timed(full, env)
        cpu = children_cpu() - cpu0
        st = fetch_stats(url)
    n_probes = probes(st, cfg.latency)
    rate, window, with_probes = window_rate(st, n_probes)
    return {
        "wall": wall,
        "rate": rate,
        "window": window,
        "with_probes": with_probes,
        "probes": n_probes,
        "cpu": cpu,
        "requests": st.requests,
    }


def bare_loop(cfg: ServerConfig, records: int, concurrency: int) -> dict[str, float]:
    """The endpoint's ceiling for any client: a bare aiohttp loop posting one pre-built body at
    the same concurrency and doing nothing with the answers (its window from its first
    request: it sends no probe)."""
    import asyncio

    import aiohttp

    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    ).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {FAKE_KEY}"}

    async def send_all(url: str) -> None:
        gate = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> None:
                async with gate, session.post(
                    f"{url}/chat/completions", data=body, headers=headers
                ) as resp:
                    await resp.read()

            await asyncio.gather(*(one() for _ in range(records)))

    with serve_in_subprocess(cfg) as url:
        asyncio.run(send_all(url))
        st = fetch_stats(url)
    rate, window, _ = window_rate(st, 0)
    return {"rate": rate, "window": window}


def probes(st: Stats, latency: float) -> int:
    """How many requests the client sent alone before its first burst: each admitted only after
    the one before it was answered, and followed by a wait of at least half the endpoint's
    latency (50 ms at the least: with no latency, back-to-back requests are not probes).
    curator asks for the rate-limit headers with separate requests at start-up; realign sends
    its first record alone while no limit is known."""
    n, gap = 0, max(latency / 2, 0.05)
    admits, done = st.early_admits, st.early_done
    while n + 1 < len(admits):
        answered = done[n]
        if answered is None or admits[n + 1] < answered or admits[n + 1] - admits[n] < gap:
            break
        n += 1
    return n


def window_rate(st: Stats, n_probes: int) -> tuple[float, float, float]:
    """(requests/s from the first request of the client's burst, after its probes, to the last
    answer; that window in seconds; requests/s from the very first request, probes included)."""
    if st.last_done is None or not st.early_admits:
        return 0.0, 0.0, 0.0
    window = max(st.last_done - st.early_admits[n_probes], 1e-9)
    whole = max(st.last_done - st.early_admits[0], 1e-9)
    return (st.admitted - n_probes) / window, window, st.admitted / whole


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--capacity", type=int, default=200)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight at most, both tools (default: 1.5 x capacity)",
    )
    ap.add_argument("--curator-python", default="/work/bench-venv/bin/python")
    ap.add_argument("--skip", choices=["realign", "curator"], default=None)
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure the endpoint's ceiling: a bare aiohttp loop with no work per answer",
    )
    args = ap.parse_args()
    concurrency = args.concurrency or int(args.capacity * 1.5)
    cfg = ServerConfig(latency=args.latency, capacity=args.capacity)
    limit = args.capacity / args.latency if args.latency > 0 else None
    print(
        f"vs curator: {args.records:,} one-request records, endpoint capacity {args.capacity} "
        f"concurrent, latency {args.latency:g} s"
        + (f" (limit {limit:,.0f} req/s)" if limit else " (overhead-bound)")
        + f", concurrency {concurrency} for both"
    )
    print(f"  machine load before {load_average()}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        data = work / "data.jsonl"
        write_dataset(data, args.records)
        cache = tiktoken_cache(work)
        base_env = {
            **os.environ,
            "TIKTOKEN_CACHE_DIR": str(cache),
            "OPENAI_API_KEY": FAKE_KEY,
            "PYTHONUNBUFFERED": "1",
        }
        if args.skip != "realign":
            realign = shutil.which("realign") or str(Path(sys.executable).with_name("realign"))
            cmd = [sys.executable, "-m", "realign.cli.main"] if not Path(realign).exists() else [realign]
            cmd += [
                "run", str(data), "-o", str(work / "out.jsonl"), "--base-url", "{URL}",
                "--model", MODEL, "--retrieval", "none", "--tasks", REWRITTEN,
                "--concurrency", str(concurrency),
            ]  # fmt: skip
            env = {**base_env, "REALIGN_HOME": str(work / "realign-home")}
            results["realign"] = run_tool(cmd, env, cfg)
            out_lines = sum(1 for _ in (work / "out.jsonl").open(encoding="utf-8"))
            results["realign"]["records_out"] = out_lines
        if args.skip != "curator":
            script = work / "curator_run.py"
            script.write_text(CURATOR_SCRIPT, encoding="utf-8")
            cmd = [args.curator_python, str(script), str(data), "{URL}", FAKE_KEY, str(concurrency)]
            env = {
                **base_env,
                "CURATOR_CACHE_DIR": str(work / "curator-cache"),
                "CURATOR_DISABLE_CACHE": "1",
                "TELEMETRY_ENABLED": "false",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": "",
            }
            results["curator"] = run_tool(cmd, env, cfg)
    for name, r in results.items():
        share = f"{r['rate'] / limit:.2f} of capacity" if limit else "overhead-bound"
        row(f"{name}: sending window", f"{r['rate']:,.0f} req/s", share)
        whole = f"{r['with_probes'] / limit:.2f} of capacity" if limit else "overhead-bound"
        row(
            f"{name}:   from its first request",
            f"{r['with_probes']:,.0f} req/s",
            f"{whole} ({r['probes']:.0f} probe request(s) sent alone first)",
        )
        row(
            f"{name}: whole command",
            f"{r['wall']:.1f} s",
            f"{args.records / r['wall']:,.0f} records/s, {r['cpu'] / args.records * 1e3:.2f} ms "
            f"CPU/record, {r['requests']:,.0f} requests",
        )
    if args.ceiling:
        bare = bare_loop(cfg, args.records, concurrency)
        share = f"{bare['rate'] / limit:.2f} of capacity" if limit else "overhead-bound"
        row("bare aiohttp loop (the ceiling)", f"{bare['rate']:,.0f} req/s", share)
    if len(results) == 2:
        ahead = results["realign"]["rate"] / max(results["curator"]["rate"], 1e-9)
        row("realign / curator (window rate)", f"{ahead:.2f}x")
    print(f"  machine load after  {load_average()}")


if __name__ == "__main__":
    main()
