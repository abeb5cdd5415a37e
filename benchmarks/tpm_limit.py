"""An enforced tokens-per-minute limit: how much of it the engine uses, how many 429s, 0 lost.

The server charges each request prompt tokens + max_tokens on arrival (as OpenAI does) and
answers 429 + retry-after + x-ratelimit-* headers beyond the limit. Two runs: the limit given
to the engine (`--tpm`), and the limit only learned from the server's headers.

Share of the limit = tokens the server admitted / the most it could admit in that window
(its burst allowance + rate × window); target >= 0.9. The steady-state share leaves out the
first minute (start-up, learning the limit from headers) and the last, partial second: tokens
admitted from second 60 on / rate × those seconds; target >= 0.95. `--seconds` sizes the run
(requests enough for that long at the limit; default 150 s, so ~90 s of steady state).
Run: .venv/bin/python benchmarks/tpm_limit.py [--tpm 600000 --seconds 150] (or --requests N)
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import BACKENDS, Label, load_average, make_backend, make_request, row
from fake_openai_server import ServerConfig, fetch_stats, serve_in_subprocess

from realign import tokens
from realign.llm.base import ChatRequest
from realign.llm.engine import Engine


async def drive(args: argparse.Namespace, url: str, tpm: float | None) -> tuple[Engine, int, float]:
    engine = Engine(make_backend(args.backend, url), concurrency=args.concurrency, tpm=tpm)
    t0 = time.perf_counter()
    out = await asyncio.gather(
        *(
            engine.structured(make_request(i, max_tokens=args.max_tokens), Label)
            for i in range(args.requests)
        ),
        return_exceptions=True,
    )
    elapsed = time.perf_counter() - t0
    await engine.aclose()
    lost = [o for o in out if isinstance(o, BaseException)]
    if lost:
        print(f"  first failure: {lost[0]!r}")
    return engine, len(lost), elapsed


def _charge(request: ChatRequest) -> int:
    """What the server charges a request: its messages' tokens + max_tokens."""
    text = "".join(m.content for m in request.messages)
    return tokens.count(text) + (request.max_tokens or 0) * request.n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tpm", type=float, default=600_000)
    ap.add_argument("--requests", type=int, default=None, help="default: from --seconds")
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--steady-after", type=float, default=60.0)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--backend", choices=BACKENDS, default="real")
    args = ap.parse_args()
    if args.requests is None:
        per_request = _charge(make_request(0, max_tokens=args.max_tokens))
        args.requests = int(args.tpm / 60 * args.seconds / per_request)
    print(
        f"TPM limit: {args.requests} requests, limit {args.tpm:,.0f} tokens/min, L={args.latency}s, backend={args.backend}"
    )
    print(f"  machine load {load_average()}")
    for mode, tpm in (("--tpm given", args.tpm), ("learned from headers", None)):
        cfg = ServerConfig(latency=args.latency, tpm=args.tpm)
        with serve_in_subprocess(cfg) as url:
            engine, lost, elapsed = asyncio.run(drive(args, url, tpm))
            st = fetch_stats(url)
        window = (st.last_admit or 0) - (st.first_admit or 0)
        most = cfg.tpm / 60 * (window + cfg.burst_seconds)  # type: ignore[operator]
        print(f" {mode}:")
        row("share of the limit used", f"{st.charged_tokens / most:.3f}", "(target >= 0.9)")
        row("tokens/min admitted", f"{st.charged_tokens / window * 60:,.0f}" if window else "n/a")
        steady = st.charged_per_second[int(args.steady_after) : -1]
        if steady:
            share = sum(steady) / (cfg.tpm / 60 * len(steady))  # type: ignore[operator]
            row(
                f"steady share (s {int(args.steady_after)}–{int(args.steady_after) + len(steady)})",
                f"{share:.3f}",
                "(target >= 0.95)",
            )
        else:
            row("steady share", "n/a", f"(the run was shorter than {args.steady_after:g} s)")
        row("429s share of requests", f"{st.limited_429 / max(st.requests, 1):.2%}", "(< 1%)")
        row("429s (server / engine)", f"{st.limited_429} / {engine.stats.rate_limited}")
        row("retries", f"{engine.stats.retries}")
        row("lost requests", f"{lost}", "(target 0)")
        row("elapsed", f"{elapsed:.1f} s")


if __name__ == "__main__":
    main()
