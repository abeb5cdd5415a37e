"""The worker of `realign run --engine ray`: `process_record` on blocks of records, in an
async Ray actor, with an engine rebuilt in its process from the run's picklable settings and
the keys fetched from the run's `KeyServer`, drawing on the run's shared budget and cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console

from realign.credentials import redact, remember
from realign.criteria import CriteriaPack
from realign.distributed import NAMESPACE
from realign.distributed.budget import share_budget
from realign.distributed.cache import RemoteCache
from realign.distributed.keys import fetch_credentials
from realign.errors import UsageError
from realign.pipeline.build import RunSettings
from realign.pipeline.record import RunOptions, Stages, process_record
from realign.pipeline.runner import STOPS, _failure
from realign.records import Failure, Record

# A worker that cannot start (a setting it lacks) says so in its rows' `stop`.
USAGE = "usage: "

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


class RecordWorker:
    """`process_record` on a block of records, in an async Ray actor (`worker_actors`).

    Built once per worker process; the engine is built on the first call, inside the event
    loop Ray runs the actor's async methods on (clients bind to the loop that first uses them).
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
        owner: str = "",
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
        self.owner = owner  # this worker's name at the budget (`worker_name`)
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
                console = self.make_console()
                runtime = build_runtime(
                    settings, self.pack, self.options, console, reads_input=False
                )
                engine = runtime.stages.engine
                if engine is not None:
                    budget = ray.get_actor(self.budget_name, namespace=NAMESPACE)
                    opts = self.settings.engine
                    share_budget(engine, budget, rpm=opts.rpm, tpm=opts.tpm, owner=self.owner)
                    if self.cache_name is not None:
                        self.cache = RemoteCache(
                            ray.get_actor(self.cache_name, namespace=NAMESPACE)
                        )
                        engine.cache = self.cache
                self.stages = runtime.stages
        return self.stages

    def __repr__(self) -> str:  # Ray shows an actor's repr in its logs and state listings
        return f"RecordWorker(budget={self.budget_name!r})"

    async def process(self, block: list[str]) -> dict[str, list[Any]]:
        """A block of records (as JSON) → its results as columns (`_rows`)."""
        records = [Record.model_validate_json(s) for s in block]
        try:
            stages = await self._start()
        except UsageError as e:  # e.g. no key on the driver nor on this node
            stop = USAGE + redact(str(e))
            return _rows(records, [(False, "", stop)] * len(records), "")
        except Exception as e:
            # Ray logs and forwards a worker's exception: only its redacted text goes.
            raise RuntimeError(redact(f"{type(e).__name__}: {e}")) from None
        outs = await asyncio.gather(*(self._one(stages, r) for r in records))
        if self.cache is not None:
            await self.cache.drain()
        return _rows(records, outs, json.dumps(self._stats_delta(stages)))

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
    """One block's results as columns; the worker's stats ride on the first row."""
    return {
        "index": [r.index for r in records],
        "ok": [ok for ok, _, _ in outs],
        "payload": [payload for _, payload, _ in outs],
        "stop": [stop for _, _, stop in outs],
        "stats": [stats] + [""] * (len(records) - 1),
    }


def worker_actors(
    n: int, num_cpus: float, calls: int, kwargs: dict[str, Any]
) -> list[Any]:
    """`n` worker actors, each serving `calls` blocks at once, spread over the cluster's nodes.
    A worker that dies (its node lost) stays dead; the driver hands its blocks to the others
    and has its budget slots reclaimed, and commits a block only once its results are back, so
    nothing is lost or written twice."""
    import ray

    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "max_concurrency": calls,
        "scheduling_strategy": "SPREAD",
    }
    cls: Any = ray.remote(**options)(RecordWorker)
    return [cls.remote(**kwargs, owner=worker_name(i)) for i in range(n)]


def worker_name(i: int) -> str:
    """Worker `i`'s name at the run's budget actor."""
    return f"worker-{i}"
