"""`realign run --engine ray`: the driver and the Ray Data worker.

The driver reads the input with realign's own readers (format detection, `--fields`, load
failures: exactly what the local engine reads), types units with the offline classifier when
asked, and hands the records not yet done to Ray Data. `RecordWorker`, an async callable class
in `map_batches`, runs `process_record` on them with an engine rebuilt in each worker from the
run's picklable settings, drawing on the run's shared budget and cache actors. The driver
commits each result it gets back to the same `RunState` the local engine uses, so outputs,
failures file, resume and exit codes are the local engine's: only where the work runs changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from rich.console import Console

from realign.credentials import Credentials, redact, remember, shareable_env
from realign.criteria import CriteriaPack
from realign.distributed import NAMESPACE, require_ray
from realign.distributed.budget import budget_actor, share_budget
from realign.distributed.cache import RemoteCache, cache_actor
from realign.distributed.keys import fetch_credentials, key_actor
from realign.errors import UsageError
from realign.pipeline.build import RunSettings
from realign.pipeline.record import RunOptions, RunSummary, Stages, pretyped, process_record
from realign.pipeline.runner import STOPS, RunStopped, _failure
from realign.pipeline.state import RunState
from realign.records import Failure, Record

# Records per Ray Data block = per actor task = per UDF call. A block's results reach the
# driver (and the run state) when the task ends: small blocks keep progress and resume fine
# grained; enough of them run at once per worker to fill its share of the run's window.
BLOCK = 32
# EngineStats counters the workers report back, summed into the driver's engine stats.
STAT_FIELDS = (
    "requests",
    "completed",
    "cache_hits",
    "coalesced",
    "retries",
    "rate_limited",
    "timeouts",
    "errors",
    "reasks",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)
# Settings the workers read from their environment (endpoints, realign settings), handed over
# in `runtime_env`, which Ray logs: keys are filtered out (`shareable_env`) and go in memory.
ENV_PREFIXES = ("REALIGN_", "OPENAI_", "GOOGLE_", "SERPER_", "HF_", "TIKTOKEN_")
# A worker that cannot start (a setting it lacks) reports so in its rows' `stop`.
USAGE = "usage: "


def init_ray(address: str | None, workers: int) -> Any:
    """Connect to a cluster (`auto`, `ray://host:10001`), or start a local Ray with room for
    `workers` worker processes; reuses a session already started in this process."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    env = shareable_env(os.environ, ENV_PREFIXES)
    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "runtime_env": {"env_vars": env},
        "log_to_driver": False,  # worker logs stay in Ray's log folder, not on our progress bar
        "include_dashboard": False,
        "logging_level": logging.WARNING,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=workers + 1, **kwargs)
    return ray


class RecordWorker:
    """`process_record` on a batch of records, in a Ray Data actor.

    Built once per worker process; the engine is built on the first call, inside the event
    loop Ray Data runs async UDFs on (clients bind to the loop that first uses them).
    """

    def __init__(
        self,
        settings: RunSettings,
        pack: CriteriaPack,
        options: RunOptions,
        budget_name: str,
        cache_name: str | None,
        make_console: Callable[[], Console],
        keys_name: str = "",
    ) -> None:
        # The offline classifier ran on the driver; the request cache is the shared actor.
        # This process does the work: keys it lacks are an error here, not on the driver.
        self.settings = dataclasses.replace(
            settings,
            classifier="llm",
            engine=dataclasses.replace(settings.engine, no_cache=True),
            distributed=False,
        )
        self.keys_name = keys_name  # the run's KeyServer: the keys come at start-up
        self.make_console = make_console  # the CLI's factory, pickled by reference
        self.pack = pack
        self.options = options
        self.budget_name = budget_name
        self.cache_name = cache_name
        self.stages: Stages | None = None
        self.cache: RemoteCache | None = None
        self._lock: asyncio.Lock | None = None
        self._sent: dict[str, float] = {}

    async def _start(self) -> Stages:
        import ray

        from realign.pipeline.build import build_runtime

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.stages is None:
                # The driver's keys win; those it has not are this node's (the cluster's).
                keys = await fetch_credentials(self.keys_name)
                remember(*keys.values())
                engine_opts = self.settings.engine
                if keys.openai_api_key is not None:
                    engine_opts = dataclasses.replace(engine_opts, api_key=keys.openai_api_key)
                settings = dataclasses.replace(
                    self.settings, engine=engine_opts, credentials=keys
                )
                runtime = build_runtime(settings, self.pack, self.options, self.make_console())
                engine = runtime.stages.engine
                if engine is not None:
                    budget = ray.get_actor(self.budget_name, namespace=NAMESPACE)
                    share_budget(
                        engine, budget, rpm=self.settings.engine.rpm, tpm=self.settings.engine.tpm
                    )
                    if self.cache_name is not None:
                        self.cache = RemoteCache(
                            ray.get_actor(self.cache_name, namespace=NAMESPACE)
                        )
                        engine.cache = self.cache
                self.stages = runtime.stages
        return self.stages

    def __repr__(self) -> str:  # Ray shows an actor's repr in its logs and state listings
        return f"RecordWorker(budget={self.budget_name!r})"

    async def __call__(self, batch: dict[str, Any]) -> AsyncIterator[dict[str, list[Any]]]:
        records = [Record.model_validate_json(s) for s in batch["record"]]
        try:
            stages = await self._start()
        except UsageError as e:  # e.g. no key on the driver nor on this node
            stop = USAGE + redact(str(e))
            yield _rows(records, [(False, "", stop)] * len(records), "")
            return
        except Exception as e:
            # Ray logs and forwards a worker's exception: only its redacted text goes.
            raise RuntimeError(redact(f"{type(e).__name__}: {e}")) from None
        outs = await asyncio.gather(*(self._one(stages, r) for r in records))
        if self.cache is not None:
            await self.cache.drain()
        yield _rows(records, outs, json.dumps(self._stats_delta(stages)))

    def _stats_delta(self, stages: Stages) -> dict[str, float]:
        """This worker's engine counters since the last call, for the driver's summary."""
        if stages.engine is None:
            return {}
        now = {k: getattr(stages.engine.stats, k) for k in STAT_FIELDS}
        delta = {k: v - self._sent.get(k, 0) for k, v in now.items()}
        self._sent = now
        return {k: v for k, v in delta.items() if v}

    async def _one(self, stages: Stages, record: Record) -> tuple[bool, str, str]:
        """(ok, payload, stop): the record or its failure, or why the run must stop."""
        try:
            out: Record | Failure = await process_record(stages, record)
        except STOPS as e:
            return False, "", redact(f"{type(e).__name__}: {e}")
        except Exception as e:  # one record's error is that record's failure
            out = _failure(record, "pipeline", e, record.raw)
        return isinstance(out, Record), out.model_dump_json(), ""


def _rows(
    records: list[Record], outs: list[tuple[bool, str, str]], stats: str
) -> dict[str, list[Any]]:
    """One block's results as Ray Data columns; the worker's stats ride on the first row."""
    return {
        "index": [r.index for r in records],
        "ok": [ok for ok, _, _ in outs],
        "payload": [payload for _, payload, _ in outs],
        "stop": [stop for _, _, stop in outs],
        "stats": [stats] + [""] * (len(records) - 1),
    }


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
    ray = init_ray(settings.address, workers)
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # realign draws its own
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    def done(out: Record | Failure) -> None:
        summary.count(out)
        if on_done is not None:
            on_done(out)

    def commit(out: Record | Failure) -> None:
        state.commit(out.index, isinstance(out, Record), out.model_dump_json())
        done(out)

    # Read on the driver, with realign's readers (what the local engine reads, record for
    # record): what is done already is skipped, unreadable input is committed as its failure,
    # the rest goes to the object store in blocks of BLOCK records, so the driver holds one
    # block at a time (Ray spills the store to disk when it fills).
    import pyarrow as pa

    blocks: list[Any] = []
    rows: list[dict[str, Any]] = []
    opts = stages.options
    typed = pretyped(
        items,
        stages.pack,
        stages.embedding,
        state.is_done,
        min_confidence=opts.min_confidence,
        reclassify=opts.reclassify,
    )
    for item in typed:
        if opts.limit is not None and summary.read >= opts.limit:
            break
        summary.read += 1
        if state.is_done(item.index):
            summary.resumed += 1
        elif isinstance(item, Failure):
            commit(item)
        else:
            rows.append({"index": item.index, "record": item.model_dump_json()})
            if len(rows) >= BLOCK:
                blocks.append(ray.put(pa.Table.from_pylist(rows)))
                rows = []
    if rows:
        blocks.append(ray.put(pa.Table.from_pylist(rows)))
    if not blocks:
        return

    engine = stages.engine
    budget_name = cache_name = None
    actors: list[Any] = []
    if engine is not None:
        budget_name = f"budget-{run_id}"
        actors.append(
            budget_actor(
                budget_name, engine.limit.maximum, settings.engine.rpm, settings.engine.tpm
            )
        )
        if not settings.engine.no_cache:
            cache_name = f"cache-{run_id}"
            path = str(engine.cache.path) if engine.cache is not None else None
            actors.append(cache_actor(cache_name, path))
    keys_name, keys = key_actor(driver_credentials(settings))
    actors.append(keys)
    # Enough blocks in flight per worker to fill its share of the run's window.
    window = max(4 * (engine.limit.maximum if engine is not None else 1), 16)
    calls = max(2, -(-window // (workers * BLOCK)))
    ds = ray.data.from_arrow_refs(blocks)
    cpus = ray.cluster_resources().get("CPU", workers + 1)
    ds = ds.map_batches(
        RecordWorker,
        fn_constructor_kwargs={
            "settings": worker_settings(settings, stages.backend),
            "pack": stages.pack,
            "options": opts,
            "budget_name": budget_name or "",
            "cache_name": cache_name,
            "make_console": make_console,
            "keys_name": keys_name,
        },
        batch_size=BLOCK,
        batch_format="numpy",
        compute=ActorPoolStrategy(
            size=workers, max_tasks_in_flight_per_actor=calls, max_concurrent_calls_per_actor=calls
        ),
        # Workers wait on the network, not the CPU; never ask for more CPUs than there are.
        num_cpus=min(1.0, cpus / (workers + 1)),
    )
    stop = ""
    try:
        for row in ds.iter_rows():
            if row["stats"] and engine is not None:
                for k, v in json.loads(row["stats"]).items():
                    setattr(engine.stats, k, getattr(engine.stats, k) + v)
            if row["stop"]:
                stop = stop or row["stop"]
                break
            payload, ok = row["payload"], bool(row["ok"])
            state.commit(int(row["index"]), ok, payload)  # the worker's JSON, as it is
            done(
                Record.model_validate_json(payload) if ok else Failure.model_validate_json(payload)
            )
    finally:
        for actor in actors:
            ray.kill(actor)
    if stop.startswith(USAGE):
        raise UsageError(stop.removeprefix(USAGE))
    if stop:
        raise RunStopped(stop)


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
