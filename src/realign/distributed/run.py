"""`realign run --engine ray`: the driver.

The driver reads the input with realign's own readers (format detection, `--fields`, load
failures: exactly what the local engine reads), types units with the offline classifier when
asked, and streams the records not yet done, in blocks of `BLOCK`, to a pool of worker actors
(`worker.py`) that run `process_record` on them, drawing on the run's shared budget, cache and
key actors. At most `workers × calls` blocks are out at once: the driver reads the next block
only when one comes back, so its memory does not grow with the input. It commits each result
to the same `RunState` the local engine uses, so outputs, failures file, resume and exit codes
are the local engine's: only where the work runs changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.console import Console

from realign.credentials import Credentials, shareable_env
from realign.distributed import NAMESPACE, require_ray
from realign.distributed.auth import join_error, match_cluster_auth
from realign.distributed.budget import budget_actor
from realign.distributed.cache import cache_actor
from realign.distributed.keys import key_actor
from realign.distributed.worker import USAGE, worker_actors, worker_name
from realign.errors import UsageError
from realign.pipeline.build import RunSettings
from realign.pipeline.record import RunSummary, Stages, pretyped
from realign.pipeline.runner import RunStopped
from realign.pipeline.state import RunState
from realign.records import Failure, Record

# Records per block = per worker call. A block's results reach the driver (and the run state)
# when the call ends: small blocks keep progress and resume fine grained; enough of them are
# out at once per worker to fill its share of the run's window.
BLOCK = 32

# Settings the workers read from their environment (endpoints, realign settings), handed over
# in `runtime_env`, which Ray logs: keys are filtered out (`shareable_env`) and go in memory.
ENV_PREFIXES = ("REALIGN_", "OPENAI_", "GOOGLE_", "SERPER_", "HF_", "TIKTOKEN_")

log = logging.getLogger(__name__)

# Tries at joining a cluster through Ray Client whose server fails to start the session.
CLIENT_ATTEMPTS = 3


def init_ray(address: str | None, workers: int) -> Any:
    """Connect to a cluster (`auto`, `ray://host:10001`), or start a local Ray with room for
    `workers` worker processes; reuses a session already started in this process."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    env = shareable_env(os.environ, ENV_PREFIXES)
    if is_client(address):
        # Paths of the client machine (REALIGN_HOME, caches) mean nothing on the cluster: its
        # actors resolve their own (the cache actor: the head node's $REALIGN_HOME).
        env = {k: v for k, v in env.items() if not v.startswith(("/", "~"))}
    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "runtime_env": {"env_vars": env},
        "log_to_driver": False,  # worker logs stay in Ray's log folder, not on our progress bar
        "include_dashboard": False,
        "logging_level": logging.WARNING,
    }
    if address:
        match_cluster_auth(address)  # the cluster's token mode, unless RAY_AUTH_MODE says
        for attempt in range(1, CLIENT_ATTEMPTS + 1):
            try:
                ray.init(address=address, **kwargs)
                break
            except ConnectionAbortedError as e:
                # Ray Client's server for this session died as it started (a fork race in
                # Ray 2.60's proxy, ray-project/ray#63202): a new attempt starts a new one.
                if not is_client(address) or attempt == CLIENT_ATTEMPTS:
                    raise UsageError(join_error(address, e)) from e
                log.warning(
                    "Ray Client: the cluster's server could not start this session "
                    "(ray-project/ray#63202); trying again (%d/%d)",
                    attempt + 1,
                    CLIENT_ATTEMPTS,
                )
            except (ConnectionError, ray.exceptions.AuthenticationError) as e:
                # No cluster there, or it refused us (mode, token): the option is at fault.
                raise UsageError(join_error(address, e)) from e
    else:
        ray.init(num_cpus=workers + 1, **kwargs)
    return ray


def run_records_ray(
    settings: RunSettings,
    stages: Stages,
    items: Iterable[Record | Failure],
    state: RunState,
    summary: RunSummary,
    *,
    run_id: str,
    on_done: Callable[[Record | Failure], None] | None = None,
    make_console: Callable[[], Console],
) -> None:
    """Like `pipeline.run_records`, with the records processed by Ray workers (each prints
    through a console from `make_console`)."""
    workers = settings.workers or 2

    def done(out: Record | Failure) -> None:
        summary.count(out)
        if on_done is not None:
            on_done(out)

    blocks = _blocks(stages, items, state, summary, done)
    first = next(blocks, None)
    if first is None:
        return  # nothing left to do: no cluster needed
    ray = init_ray(settings.address, workers)
    engine = stages.engine
    actors: list[Any] = []
    budget_name, cache_name, budget = "", None, None
    if engine is not None:
        budget_name = f"budget-{run_id}"
        limits = (engine.limit.maximum, settings.engine.rpm, settings.engine.tpm)
        budget = budget_actor(budget_name, *limits)
        actors.append(budget)
        if not settings.engine.no_cache:
            cache_name = f"cache-{run_id}"
            # With Ray Client the actor resolves the path on the head (None: its default).
            cache = None if is_client(settings.address) else engine.cache
            actors.append(cache_actor(cache_name, str(cache.path) if cache is not None else None))
    keys_name, keys = key_actor(driver_credentials(settings))
    actors.append(keys)
    # Enough blocks out per worker to fill its share of the run's window.
    window = max(4 * (engine.limit.maximum if engine is not None else 1), 16)
    calls = max(2, -(-window // (workers * BLOCK)))
    cpus = ray.cluster_resources().get("CPU", workers + 1)
    kwargs = {
        "settings": worker_settings(settings, stages.backend),
        "pack": stages.pack,
        "options": stages.options,
        "budget_name": budget_name,
        "cache_name": cache_name,
        "make_console": make_console,
        "keys_name": keys_name,
    }
    # Workers wait on the network, not the CPU; never ask for more CPUs than there are.
    pool = worker_actors(workers, min(1.0, cpus / (workers + 1)), calls, kwargs)
    actors += pool
    stop = ""
    pending: dict[Any, tuple[int, list[str]]] = {}  # call -> (worker, its block)
    load = [0] * workers
    alive = set(range(workers))

    def submit(block: list[str]) -> None:
        w = min(alive, key=load.__getitem__)
        pending[pool[w].process.remote(block)] = (w, block)
        load[w] += 1

    def collect() -> str:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            w, block = pending.pop(ref)
            load[w] -= 1
            try:
                cols = ray.get(ref)
            except ray.exceptions.RayActorError:
                # The worker died (its node lost): its blocks go to the others, which may
                # have room where a restarted worker would have none.
                alive.discard(w)
                if not alive:
                    raise
                if budget is not None and engine is not None:  # its slots never come back
                    budget.reclaim.remote(worker_name(w), engine.request_timeout)
                submit(block)
                continue
            why = _commit(cols, state, engine, done)
            if why:
                return why
        return ""

    try:
        submit(first)
        for block in blocks:
            while len(pending) >= len(alive) * calls and not stop:
                stop = collect()
            if stop:
                break
            submit(block)
        while pending and not stop:
            stop = collect()
    finally:
        for actor in actors:
            ray.kill(actor)
    if stop.startswith(USAGE):
        raise UsageError(stop.removeprefix(USAGE))
    if stop:
        raise RunStopped(stop)


def _blocks(
    stages: Stages,
    items: Iterable[Record | Failure],
    state: RunState,
    summary: RunSummary,
    done: Callable[[Record | Failure], None],
) -> Iterator[list[str]]:
    """The records still to do, as blocks of JSON, read lazily with realign's readers (what the
    local engine reads, record for record): what is done already is skipped, unreadable input
    is committed as its failure."""
    opts = stages.options
    typed = pretyped(
        items,
        stages.pack,
        stages.embedding,
        state.is_done,
        min_confidence=opts.min_confidence,
        reclassify=opts.reclassify,
    )
    block: list[str] = []
    for item in typed:
        if opts.limit is not None and summary.read >= opts.limit:
            break
        summary.read += 1
        if state.is_done(item.index):
            summary.resumed += 1
        elif isinstance(item, Failure):
            state.commit(item.index, False, item.model_dump_json())
            done(item)
        else:
            block.append(item.model_dump_json())
            if len(block) >= BLOCK:
                yield block
                block = []
    if block:
        yield block


def _commit(
    cols: dict[str, list[Any]],
    state: RunState,
    engine: Any,
    done: Callable[[Record | Failure], None],
) -> str:
    """A block's results into the run state; returns why the run must stop ("" to go on)."""
    stats = cols["stats"][0] if cols["stats"] else ""
    if stats and engine is not None:
        for k, v in json.loads(stats).items():
            setattr(engine.stats, k, getattr(engine.stats, k) + v)
    for index, ok, payload, stop in zip(
        cols["index"], cols["ok"], cols["payload"], cols["stop"], strict=True
    ):
        if stop:
            return str(stop)
        state.commit(int(index), bool(ok), payload)  # the worker's JSON, as it is
        done(Record.model_validate_json(payload) if ok else Failure.model_validate_json(payload))
    return ""


def is_client(address: str | None) -> bool:
    """Ray Client (`ray://HOST:10001`): this process is not on the cluster."""
    return bool(address and address.startswith("ray://"))


def driver_credentials(settings: RunSettings) -> Credentials:
    """The keys this driver has: the LLM key as its settings resolve it (flag, environment,
    config file: the file is on this machine only), the search keys from its environment."""
    from realign.config import load_settings

    return Credentials.from_env(openai_api_key=load_settings(settings.engine.flags()).api_key)


def worker_settings(settings: RunSettings, backend: str | None) -> RunSettings:
    """What the workers build from: the driver's settings, with the backend and retrieval the
    driver chose (a node whose environment holds other keys still runs as the driver said)."""
    from realign.search.registry import default_retrieval_spec

    if backend and not settings.engine.backend:
        engine = dataclasses.replace(settings.engine, backend=backend)
        settings = dataclasses.replace(settings, engine=engine)
    if settings.retrieval is not None or settings.classify_only:
        return settings
    return dataclasses.replace(settings, retrieval=default_retrieval_spec(os.environ)[0])
