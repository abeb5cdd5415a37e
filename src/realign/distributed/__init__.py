"""`realign run --engine ray`: the pipeline on Ray actors, across processes or machines.

- `budget.py`: one rate budget (concurrency, requests/min, tokens/min) held by a named Ray
  actor; every worker's engine leases request slots and tokens from it in small batches.
- `cache.py`: the request cache every worker shares, a named Ray actor fronting the driver's
  SQLite cache (SQLite on a shared filesystem is not safe).
- `keys.py`: the actor that hands the driver's API keys to the workers in memory.
- `worker.py`: the worker actor (`process_record` on blocks of records).
- `run.py`: the driver (reads the input, streams blocks to the workers, commits results to
  the run state, writes outputs).

Ray is an optional extra: nothing here imports it at module level, so `import realign` never
needs it; `require_ray()` names the extra when it is missing.
"""

from __future__ import annotations

from typing import Any

NAMESPACE = "realign"


class RayUnavailable(RuntimeError):
    """Ray is not installed; the message says which extra to install."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable("--engine ray needs Ray: pip install 'realign[ray]'") from e
    return ray


def on_this_node() -> Any:
    """A scheduling strategy that keeps an actor on this process's node, hard: the run's
    budget, cache and key actors belong with the driver (the cache is its SQLite file), and
    must not land on, and die with, a worker node the cluster loses."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
