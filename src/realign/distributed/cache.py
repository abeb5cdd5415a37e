"""The request cache every worker of a Ray run shares.

SQLite's locking is not safe on network filesystems, so workers on other machines must not
open the cache file themselves. One named Ray actor (`CacheServer`) opens the driver's cache
(`$REALIGN_CACHE` / `$REALIGN_HOME/cache.sqlite` on the driver's node) and serves `get`/`set`;
workers reach it through `RemoteCache`, which has the interface of `realign.llm.cache.Cache` the
engine uses. An answer a worker stores is visible to every other worker and to the next run,
so a rerun after a kill re-pays at most the requests that were in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

from realign.llm.cache import Cache

# Lookups within this window go to the actor as one call: a few ms added to requests that
# take seconds, and far fewer actor calls at hundreds of requests/s.
BATCH_WINDOW_S = 0.005


class CacheServer:
    """Run as a named Ray actor on the driver's node (one thread: SQLite's one connection)."""

    def __init__(self, path: str | None = None) -> None:
        self.cache = Cache(path)

    def get_many(self, keys: list[str]) -> list[str | None]:
        return [self.cache.get(k) for k in keys]

    def set_many(self, items: list[tuple[str, str, str]]) -> None:
        for key, value, stage in items:
            self.cache.set(key, value, stage=stage)

    def stats(self) -> dict[str, int]:
        return {"hits": self.cache.hits, "misses": self.cache.misses, "writes": self.cache.writes}

    def close(self) -> None:
        self.cache.close()


def cache_actor(name: str, path: str | None = None) -> Any:
    """Create (or get) the run's cache actor, pinned to this (the driver's) node."""
    import ray

    from realign.distributed import NAMESPACE, on_this_node

    here = on_this_node()
    cls = ray.remote(num_cpus=0)(CacheServer)
    return cls.options(
        name=name, namespace=NAMESPACE, get_if_exists=True, scheduling_strategy=here
    ).remote(path)


class RemoteCache:
    """`Cache.get/set` for a worker, served by the run's `CacheServer` actor.

    The engine awaits `aget`, so a lookup never blocks the worker's event loop; the lookups of
    `BATCH_WINDOW_S` and the stores of one loop turn go to the actor as one call each
    (`get_many`/`set_many`), so a worker
    at hundreds of requests/s makes tens of actor calls/s, not hundreds. `set` does not wait:
    the answer is in hand, and `drain` is awaited before the worker hands results back.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._gets: list[tuple[str, asyncio.Future[str | None]]] = []
        self._sets: list[tuple[str, str, str]] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._scheduled = False

    async def aget(self, key: str) -> str | None:
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._gets.append((key, fut))
        self._schedule()
        value = await fut
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def get(self, key: str) -> str | None:
        import ray

        return ray.get(self.actor.get_many.remote([key]))[0]  # type: ignore[no-any-return]

    def set(self, key: str, value: str, stage: str = "") -> None:
        self._sets.append((key, value, stage))
        self.writes += 1
        # Stores go out on the next loop turn, not after the window: an answer paid for must
        # reach the cache before a kill can lose it.
        asyncio.get_running_loop().call_soon(self._flush_sets)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(BATCH_WINDOW_S, self._flush)

    def _flush_sets(self) -> None:
        if self._sets:
            sets, self._sets = self._sets, []
            self._track(asyncio.ensure_future(_await(self.actor.set_many.remote(sets))))

    def _flush(self) -> None:
        self._scheduled = False
        self._flush_sets()
        if self._gets:
            gets, self._gets = self._gets, []
            task = asyncio.ensure_future(self._answer(gets))
            self._track(task)

    async def _answer(self, gets: list[tuple[str, asyncio.Future[str | None]]]) -> None:
        try:
            values = await self.actor.get_many.remote([k for k, _ in gets])
        except Exception as e:
            for _, fut in gets:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, fut), value in zip(gets, values, strict=True):
            if not fut.done():
                fut.set_result(value)

    def _track(self, fut: asyncio.Future[Any]) -> None:
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait until every answer set so far is stored (before results are handed back, so
        a record the driver commits never has answers still on their way to the cache)."""
        self._flush_sets()
        while self._pending:
            await asyncio.gather(*list(self._pending))

    def close(self) -> None:
        pass  # the driver closes the actor's cache


async def _await(ref: Any) -> Any:
    return await ref
