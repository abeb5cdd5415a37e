"""The Python API mirrors the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from packs import write_pack

from realign import Record, Turn, read_records, realign_records, run
from realign.llm.base import ChatRequest
from realign.llm.fake import FakeBackend, default_responder
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


ROOT = Path(__file__).resolve().parents[1]


def readme_api_example() -> str:
    """The Python block of the README's "Python API" section, as a user would copy it."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_python_api_example_runs_and_handles_failures(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README example iterated the results reading `r.meta.status`, which raised
    AttributeError on the first Failure. Here its second record gets no valid answer."""
    import realign.api
    import realign.cli.run_impl

    real = realign.api.realign_records
    broken = "screw whose head is stripped"  # record 1 of examples/realign_items.json

    def responder(req: ChatRequest) -> str:
        if any(broken in m.content for m in req.messages):
            return "not JSON"  # every answer for this record: its stage fails
        return default_responder(req)

    def with_fake_backend(records: Any, base_url: str, model: str, **kw: Any) -> Any:
        assert base_url.startswith("http") and model  # the example's own arguments
        return real(records, backend=FakeBackend(responder), **kw)

    runs: list[tuple[Any, ...]] = []
    monkeypatch.setattr(realign.cli.run_impl, "run", lambda *a, **kw: runs.append((a, kw)) or 0)
    monkeypatch.setattr(realign.api, "realign_records", with_fake_backend)
    monkeypatch.chdir(ROOT)  # the example reads examples/realign_items.json
    exec(compile(readme_api_example(), "README.md", "exec"), {})

    lines = capsys.readouterr().out.splitlines()
    assert runs == [(("data.json", "out.json"), {"model": "gpt-4o-mini", "retrieval": "none"})]
    assert len(lines) == 3
    assert lines[1].startswith("1 failed in ") and lines[0].startswith("0 ")
    assert lines[0].split()[1] in {"rewritten", "kept", "skipped"}


def test_realign_records_takes_read_records_output_as_is(tmp_path: Path) -> None:
    """A line `read_records` could not read comes back as a `load` Failure in its place."""
    src = tmp_path / "in.jsonl"
    good = {"instruction": "Capital of France?", "input": "", "output": "Paris is the capital."}
    src.write_text(json.dumps(good) + "\n{not json\n" + json.dumps(good) + "\n")
    items = list(read_records(src))
    out = realign_records(items, backend=FakeBackend(answer), pack=str(write_pack(tmp_path / "p")))
    assert [type(x).__name__ for x in out] == ["Record", "Failure", "Record"]
    assert isinstance(out[1], Failure) and out[1].stage == "load" and "in.jsonl:2" in out[1].error


def test_realign_records_refuses_an_unreadable_file(tmp_path: Path) -> None:
    src = tmp_path / "empty.json"
    src.write_text("")
    with pytest.raises(ValueError, match=r"empty\.json"):
        realign_records(list(read_records(src)), backend=FakeBackend(answer))
