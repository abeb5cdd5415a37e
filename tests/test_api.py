"""The Python API mirrors the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from packs import write_pack

from realign import Record, Turn, realign_records, run
from realign.llm.base import ChatRequest
from realign.llm.fake import FakeBackend
from realign.records import Failure


def answer(req: ChatRequest) -> str:
    if req.stage == "classify":
        return json.dumps({"reason": "r", "task_type": "open_qa"})
    return json.dumps(
        {"reasoning": "r", "format_fits": True, "response": "**Paris.** It is the capital."}
    )


def test_realign_records_in_memory(tmp_path: Path) -> None:
    recs = [
        Record(
            id="a",
            index=0,
            source_format="items",
            turns=[
                Turn(role="user", content="Capital of France?"),
                Turn(role="assistant", content="Paris is the capital."),
            ],
        )
    ]
    (out,) = realign_records(
        recs, backend=FakeBackend(answer), pack=str(write_pack(tmp_path / "p"))
    )
    assert not isinstance(out, Failure)
    assert out.meta.status == "rewritten" and out.turns[1].content.startswith("**Paris.**")


def test_run_mirrors_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(
            {"instruction": "Capital of France?", "input": "", "output": "Paris is the capital."}
        )
        + "\n"
    )
    code = run(src, tmp_path / "out.jsonl", backend="fake", pack=str(write_pack(tmp_path / "p")))
    assert code == 0
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(line)["realign"]["units"][0]["task_type"] in {
        "open_qa",
        "math_puzzles",
        "story_generation",
        "planning",
        "default",
    }
