"""Cache write/read cost: immediate autocommitted writes (what the engine does) vs one batch.

Run: .venv/bin/python benchmarks/cache_bench.py [N]
Prints µs per set / get so the choice of immediate commits in `realign.llm.cache` stays measured.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path

from realign.llm.cache import Cache


def main(n: int = 20_000) -> None:
    value = "x" * 1500  # a typical cached response body
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        cache = Cache(Path(d) / "c.sqlite")
        t = time.perf_counter()
        for k in keys:
            cache.set(k, value, stage="rewrite")
        per_set = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for k in keys:
            cache.get(k)
        per_get = (time.perf_counter() - t) / n * 1e6
        cache.close()

        batched = Cache(Path(d) / "b.sqlite")
        t = time.perf_counter()
        batched._db.execute("BEGIN")
        for k in keys:
            batched.set(k, value, stage="rewrite")
        batched._db.execute("COMMIT")
        per_batched = (time.perf_counter() - t) / n * 1e6
        batched.close()
    print(
        f"cache: n={n} immediate set {per_set:.1f} µs, get {per_get:.1f} µs, "
        f"batched set {per_batched:.1f} µs"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
