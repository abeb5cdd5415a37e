"""The Python API, mirroring the CLI.

from realign import realign_records, read_records, run

# Whole files, exactly like `realign run` (resumable, failures file, progress on stderr):
# `realign.run` is the command itself (`realign.cli.run_impl.run`).
exit_code = run("data.json", "out.json", model="gpt-4o-mini")

# Records in memory, with any backend (a test can pass FakeBackend). Each input item comes
# back in its place: a realigned Record, or a Failure (unreadable, or a stage that failed).
records = list(read_records("data.json"))
out = realign_records(records, base_url="http://127.0.0.1:8000/v1", model="my-model")
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from realign.criteria import CriteriaPack, load_pack
from realign.io.errors import ReadError
from realign.llm.base import Backend
from realign.llm.engine import Engine
from realign.pipeline.record import RunOptions, Stages, process_record
from realign.pipeline.runner import StageError
from realign.records import Failure, Record


async def arealign_records(
    records: Iterable[Record | ReadError],
    *,
    backend: Backend | None = None,
    model: str | None = None,
    base_url: str | None = None,
    pack: CriteriaPack | str = "realign",
    criteria: str | Path | None = None,
    concurrency: int = 8,
    retriever: Any | None = None,
    **options: Any,
) -> list[Record | Failure]:
    """Realign records in memory; a failed record comes back as a `Failure` in its place.

    `records` may come straight from `read_records`: a record it could not read becomes a
    `load` failure in its place, as in `realign run`'s failures file. An unreadable file as a
    whole (empty, not UTF-8, …) raises ValueError: there is nothing to go on with.
    """
    records = list(records)
    for item in records:
        if isinstance(item, ReadError) and item.index is None:
            raise ValueError(str(item))
    if backend is None:
        from realign.llm.build import EngineOptions, make_backend

        backend = make_backend(EngineOptions(model=model, base_url=base_url))
    crit = pack if isinstance(pack, CriteriaPack) else load_pack(pack, criteria)
    engine = Engine(backend, concurrency=concurrency)
    stages = Stages(
        pack=crit,
        engine=engine,
        options=RunOptions(
            **{**crit.settings.run_defaults(local=backend.name == "local"), **options}
        ),
        retriever=retriever,
        model=backend.model,
        backend=backend.name,
    )

    async def one(rec: Record | ReadError) -> Record | Failure:
        if isinstance(rec, ReadError):
            return rec.as_failure("load")
        try:
            return await process_record(stages, rec)
        except StageError as e:
            return Failure(
                id=rec.id,
                index=rec.index,
                stage=e.stage,
                error=str(e),
                raw_output=e.raw_output,
                record=rec.raw,
            )

    try:
        return list(await asyncio.gather(*(one(r) for r in records)))
    finally:
        await engine.aclose()


def realign_records(records: Iterable[Record | ReadError], **kwargs: Any) -> list[Record | Failure]:
    """Synchronous `arealign_records`."""
    return asyncio.run(arealign_records(records, **kwargs))
