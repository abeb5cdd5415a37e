"""What `--engine ray` buys where cores exist: the measured CPU cost of a request, split by the
process that pays it, and the client-bound rate it implies on N cores (used by
`ray_throughput.py`, which measures; this module only does the arithmetic and the printing).

Per request, in milliseconds of CPU:
- c: the process running the engine (the local engine, or the sum over Ray workers): building
  the body, the HTTP round trip on aiohttp, parsing, validating, and with Ray the leases from
  the shared budget actor;
- a: the budget actor (one process, one event loop: it can never use more than one core);
- d: everything else of Ray's (the driver waiting, raylet, GCS, agents, idle workers);
- s: the endpoint. A real endpoint runs elsewhere; the fake one here shares the 2 cores.

Every worker is one Python process, so it uses at most one core. With a remote endpoint the
client-bound rate on N cores is R(N) = N × 1000 / (c + a + d) requests/s (N cores busy, about
R × c / 1000 of them workers, the rest of a core for the actor and Ray's daemons), and never
more than 1000 / a (the one budget actor) nor the endpoint's C/L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Measured:
    label: str
    workers: int  # 0: the local engine (no Ray)
    requests: int
    seconds: float  # first request sent to last answer
    window: float  # seconds over which the CPU figures were counted (>= seconds)
    client_s: float  # CPU of the engine process(es) over the run
    actor_s: float  # the budget actor's CPU
    ray_s: float  # the rest of the driver's process tree: driver, Ray's daemons, idle workers
    server_s: float  # the fake endpoint's own CPU
    busy_cores: float  # all cores busy on the machine (ours and other jobs'), on average
    load: tuple[float, float]  # 1-minute load average before and after
    lost: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def ms(self, cpu_s: float) -> float:
        return cpu_s / self.requests * 1000

    @property
    def ours_cores(self) -> float:
        """Cores this benchmark's processes (client, Ray, endpoint) kept busy, on average."""
        return (self.client_s + self.actor_s + self.ray_s + self.server_s) / self.window

    @property
    def others_cores(self) -> float:
        """Cores other jobs on the machine kept busy meanwhile."""
        return max(0.0, self.busy_cores - self.ours_cores)


def print_rows(rows: list[Measured], ideal: float) -> None:
    head = f"  {'':<20}{'req/s':>8}{'C/L':>7}{'client':>8}{'actor':>7}{'ray':>7}{'server':>8}"
    print(head + f"{'cores: ours':>13}{'others':>8}{'load before/after':>19}{'lost':>6}")
    print(f"  {'':<35}{'CPU ms per request':^30}")
    for m in rows:
        print(
            f"  {m.label:<20}{m.rate:>8.0f}{m.rate / ideal:>7.3f}{m.ms(m.client_s):>8.3f}"
            f"{m.ms(m.actor_s):>7.3f}{m.ms(m.ray_s):>7.3f}{m.ms(m.server_s):>8.3f}"
            f"{m.ours_cores:>13.2f}{m.others_cores:>8.2f}"
            f"{f'{m.load[0]:.1f} / {m.load[1]:.1f}':>19}{m.lost:>6}"
        )


def client_bound_rate(
    cores: float, c: float, a: float, d: float, s: float = 0.0, *, workers: int | None = None
) -> float:
    """Requests/s that `cores` fully busy can drive at c + a + d (+ s, an endpoint on the same
    machine) ms of CPU a request, no process beyond one core: `workers` (default: one a core)
    at 1000 / c each, the budget actor at 1000 / a."""
    rate = cores * 1000 / (c + a + d + s)
    rate = min(rate, (workers or math.ceil(cores)) * 1000 / c)
    return min(rate, 1000 / a) if a > 0 else rate


def print_scaling(local: Measured, ray_rows: list[Measured], ideal: float, cores: int) -> None:
    base = max(ray_rows, key=lambda m: m.workers)  # the most workers: the most contention
    c, a, d, s = (base.ms(x) for x in (base.client_s, base.actor_s, base.ray_s, base.server_s))
    print(
        f"2. expected scaling, from the {base.label} row: c = {c:.3f} ms CPU a request in the "
        f"workers (the local engine: {local.ms(local.client_s):.3f}), a = {a:.3f} ms in the "
        f"budget actor, d = {d:.3f} ms in the driver and Ray's daemons, s = {s:.3f} ms in "
        "the fake endpoint"
    )
    print(
        "   with the endpoint elsewhere, on N cores: R(N) = min(N x 1000 / (c + a + d), "
        "1000 / a, C/L) requests/s, with about R x c / 1000 workers (one a core; the actor "
        "and Ray's daemons use what is left)"
    )
    print(
        f"  {'':<16}{'N x 1000/(c+a+d)':>18}{'1000/a':>9}{'R(N)':>8}{'workers':>9}"
        f"{'cores busy':>12}  bound by"
    )
    for n in (4, 8, 16, 32):
        by_cores, by_actor = n * 1000 / (c + a + d), (1000 / a if a > 0 else math.inf)
        r = min(client_bound_rate(n, c, a, d), ideal)
        bound = "the cores" if r == by_cores else "the budget actor" if r == by_actor else "C/L"
        print(
            f"  {f'N = {n} cores':<16}{by_cores:>18.0f}{by_actor:>9.0f}{r:>8.0f}"
            f"{math.ceil(r * c / 1000):>9}{r * (c + a + d) / 1000:>12.1f}  {bound}"
            + (f" (this benchmark's C/L = {ideal:.0f})" if bound == "C/L" else "")
        )
    c_local = local.ms(local.client_s)
    print(
        f"   for comparison, N independent local engines (no shared budget, c = {c_local:.3f} "
        f"ms): N x 1000 / c = {1000 / c_local:.0f} req/s a core"
    )
    one = next((m for m in ray_rows if m.workers == 1), None)
    if one is None or base.workers == 1:
        return
    # The check on this machine: the same model, with the endpoint and other jobs sharing it.
    predicted = {}
    for m in (one, base):
        free = max(0.1, cores - m.others_cores)
        ms = [m.ms(x) for x in (m.client_s, m.actor_s, m.ray_s, m.server_s)]
        predicted[m.workers] = client_bound_rate(free, *ms, workers=m.workers)
    worker_cores = one.ms(one.client_s) * one.rate / 1000
    rest_cores = one.ms(one.actor_s + one.ray_s + one.server_s) * one.rate / 1000
    print(
        f"   check on this machine ({cores} cores, shared with the endpoint): {base.workers} "
        f"workers / 1 worker = {base.rate / one.rate:.2f}x measured, "
        f"{predicted[base.workers] / predicted[1]:.2f}x by the model (the endpoint's s "
        f"counted; other jobs left {cores - one.others_cores:.1f} and "
        f"{cores - base.others_cores:.1f} cores). Not {base.workers}x: with 1 worker, the worker "
        f"took {worker_cores:.2f} core and the budget actor, Ray and the endpoint "
        f"{rest_cores:.2f} more, so the second worker found only "
        f"{max(0.0, cores - one.others_cores - worker_cores - rest_cores):.2f} core free, "
        "and everything it adds costs the actor and the endpoint more as well"
    )
    # The check above uses each row's own costs (it shows the CPU accounting explains the
    # rate); a forecast from the 1-worker row alone shows how far contention moves them.
    ms1 = [one.ms(x) for x in (one.client_s, one.actor_s, one.ray_s, one.server_s)]
    forecast = client_bound_rate(cores - one.others_cores, *ms1, workers=base.workers)
    print(
        f"   forecast of {base.workers} workers from the 1-worker row's costs alone: "
        f"{forecast:.0f} req/s ({forecast / one.rate:.2f}x), measured {base.rate:.0f}: the "
        f"costs a request rose {base.ms(base.client_s + base.actor_s + base.ray_s + base.server_s) / sum(ms1):.2f}x "
        "with every core busy"
    )
