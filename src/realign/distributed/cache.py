"""The request cache every worker of a Ray run shares.

SQLite's locking is not safe on network filesystems, so workers on other machines must not
open the cache file themselves. One named Ray actor (`CacheServer`) opens the driver's cache
(`$REALIGN_CACHE` / `$REALIGN_HOME/cache.sqlite` on the driver's node) and serves `get`/`set`;
workers reach it through `RemoteCache`, which has the interface of `realign.cache.Cache` the
engine uses. An answer a worker stores is visible to every other worker and to the next run,
so a rerun after a kill re-pays at most the requests that were in flight.
"""

from __future__ import annotations

from typing import Any

from realign.cache import Cache


class CacheServer:
    """Run as a named Ray actor on the driver's node (one thread: SQLite's one connection)."""

    def __init__(self, path: str | None = None) -> None:
        self.cache = Cache(path)

    def get(self, key: str) -> str | None:
        return self.cache.get(key)

    def set(self, key: str, value: str, stage: str = "") -> None:
        self.cache.set(key, value, stage=stage)

    def stats(self) -> dict[str, int]:
        return {"hits": self.cache.hits, "misses": self.cache.misses, "writes": self.cache.writes}

    def close(self) -> None:
        self.cache.close()


def cache_actor(name: str, path: str | None = None) -> Any:
    """Create (or get) the run's cache actor, pinned to this (the driver's) node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from realign.distributed import NAMESPACE

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    cls = ray.remote(num_cpus=0)(CacheServer)
    return cls.options(
        name=name, namespace=NAMESPACE, get_if_exists=True, scheduling_strategy=here
    ).remote(path)


class RemoteCache:
    """`Cache.get/set` for a worker, served by the run's `CacheServer` actor.

    `get` blocks for one round trip (the engine's cache interface is synchronous; ~1 ms, small
    next to an LLM request); `set` does not wait: the answer is already in hand, and calls of
    one worker reach the actor in order.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._pending: list[Any] = []

    def get(self, key: str) -> str | None:
        import ray

        value = ray.get(self.actor.get.remote(key))
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def set(self, key: str, value: str, stage: str = "") -> None:
        self._pending.append(self.actor.set.remote(key, value, stage))
        self.writes += 1

    async def drain(self) -> None:
        """Wait until every answer set so far is stored (before results are handed back, so
        a record the driver commits never has answers still on their way to the cache)."""
        pending, self._pending = self._pending, []
        for ref in pending:
            await ref

    def close(self) -> None:
        pass  # the driver closes the actor's cache
