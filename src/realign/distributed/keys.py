"""How a Ray run's API keys reach its workers: in memory, never in `runtime_env`, never in an
object Ray may write to disk.

Ray writes a job's `runtime_env` in plain text to `runtime_env_agent.log` on every node and
shows it to whoever lists jobs; Ray Data `ray.put`s a map's constructor arguments into the
object store, which spills to the session folder when it fills. So the keys go neither way:
the driver hands them to a small named actor (`KeyServer`, pinned to the driver's node) in a
method call, whose arguments Ray sends inline over its RPC; each worker asks that actor for
them once at start-up, and the answer comes back inline too. The actor is killed when the run
ends. Everything that holds them prints `**********` (`Credentials` holds `SecretStr`s).

This keeps keys out of Ray's logs, session folder, dashboard and job listings; it does not hide
them from code that other users of the same cluster run on its workers (Ray does not isolate
jobs from one another).
"""

from __future__ import annotations

import secrets
from typing import Any

from realign.credentials import Credentials


class KeyServer:
    """Holds the run's `Credentials` in the memory of one actor process."""

    def __init__(self) -> None:
        self._credentials = Credentials()

    def __repr__(self) -> str:  # Ray shows an actor's repr in its logs and state listings
        return "KeyServer()"

    def put(self, credentials: Credentials) -> None:
        self._credentials = credentials

    def get(self) -> Credentials:
        return self._credentials


def key_actor(credentials: Credentials) -> tuple[str, Any]:
    """Start the run's key actor on this (the driver's) node and hand it the keys; returns its
    name (random: one run's workers never ask another run's actor) and its handle."""
    import ray

    from realign.distributed import NAMESPACE, on_this_node

    name = f"keys-{secrets.token_hex(8)}"
    here = on_this_node()
    cls: Any = ray.remote(num_cpus=0)(KeyServer)
    actor = cls.options(name=name, namespace=NAMESPACE, scheduling_strategy=here).remote()
    ray.get(actor.put.remote(credentials))  # constructor arguments would be kept by Ray
    return name, actor


async def fetch_credentials(name: str) -> Credentials:
    """A worker's copy of the run's keys (empty `Credentials` when the run started none)."""
    if not name:
        return Credentials()
    import ray

    from realign.distributed import NAMESPACE

    actor = ray.get_actor(name, namespace=NAMESPACE)
    creds: Credentials = await actor.get.remote()
    return creds
