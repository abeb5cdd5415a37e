"""The pipeline over HTTP, replayed from cassettes recorded against the real llama.cpp server
running SmolLM2-135M (see cassettes/README.md; re-record with
`.venv/bin/python scripts/record_cassettes.py --port 8771 tests/test_pipeline_llama.py -k http`),
and one end-to-end run of the real embedded model on three example records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from packs import tiny_pack

from realign.criteria import load_pack
from realign.io.read import read_records
from realign.llm.engine import Engine
from realign.llm.openai_backend import OpenAIBackend
from realign.pipeline.record import RunOptions, Stages, process_record
from realign.records import Record, Turn

ROOT = Path(__file__).resolve().parents[1]
URL = "http://127.0.0.1:8771/v1"  # the fixed port cassettes are recorded on


def llama() -> OpenAIBackend:
    return OpenAIBackend(
        "smollm2-135m-instruct",
        base_url=URL,
        structured_method="function_calling",
        supports_n=False,
    )


def rec(i: int, instruction: str, response: str, category: str | None = None) -> Record:
    return Record(
        id=str(i),
        index=i,
        source_format="items",
        turns=[
            Turn(
                role="user", content=instruction, extra={"category": category} if category else {}
            ),
            Turn(role="assistant", content=response),
        ],
    )


async def process(pack, records: list[Record], backend) -> list[Record]:
    engine = Engine(backend, concurrency=1)
    stages = Stages(
        pack=pack, engine=engine, options=RunOptions(), model=backend.model, backend=backend.name
    )
    try:
        return [await process_record(stages, r) for r in records]
    finally:
        await engine.aclose()


@pytest.mark.vcr
def test_classify_and_rewrite_over_http(tmp_path: Path) -> None:
    pack = tiny_pack(tmp_path)
    records = [
        rec(
            0,
            "What is the capital of Australia?",
            "Canberra is the capital of Australia. "
            "It was chosen as a compromise between Sydney and Melbourne.",
        ),
        rec(
            1,
            "Plan a three-day study schedule for a history exam.",
            "Day 1 read chapters 1-3. Day 2 read chapters 4-6 and make notes. Day 3 review notes "
            "and do a practice test.",
            category="planning",
        ),
    ]
    out = asyncio.run(process(pack, records, llama()))
    first, second = out
    # Classification is constrained to the pack's names by the grammar.
    assert first.meta.units[0].task_type in pack
    assert first.meta.units[0].task_source in {"llm", "default"}
    assert second.meta.units[0].task_source == "input"
    for r in out:
        u = r.meta.units[0]
        assert u.status in {"rewritten", "kept", "skipped"}
        if u.status == "rewritten":
            assert r.turns[1].content == u.candidates[u.chosen].response
        if u.status == "kept" and u.candidates:
            assert r.turns[1].content == u.original
        assert r.meta.provenance and r.meta.provenance.model == "smollm2-135m-instruct"


@pytest.mark.slow
@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # the llama.cpp server we start
def test_real_embedded_model_on_three_example_records(tmp_path: Path) -> None:
    """No cassette: starts llama.cpp with SmolLM2 and realigns three example records."""
    pytest.importorskip("llama_cpp", reason="needs the `local` extra (pip install -e '.[local]')")
    from realign.llm.local import LocalBackend

    records = [
        r for r in read_records(ROOT / "examples" / "realign_items.json") if isinstance(r, Record)
    ][:3]
    assert len(records) == 3
    out = asyncio.run(process(load_pack(), records, LocalBackend()))
    for r in out:
        assert r.meta.status in {"rewritten", "kept", "skipped"}
        assert all(u.task_type in load_pack() for u in r.meta.units)
        assert r.meta.provenance and r.meta.provenance.backend == "local"
