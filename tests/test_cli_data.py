"""`realign convert` and `realign stats` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from realign.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

runner = CliRunner()

NQ_LIKE: list[dict[str, Any]] = [
    {
        "items": [
            {"from": "human", "value": "who painted the mona lisa?"},
            {"from": "gpt", "value": "Leonardo da Vinci"},
        ],
        "id": 0,
    },
    {
        "items": [
            {"from": "human", "value": "how many moons does mars have?"},
            {"from": "gpt", "value": "two\nPhobos and Deimos"},
        ],
        "id": 1,
    },
    {
        "items": [
            {"from": "human", "value": "largest desert on earth?", "category": "open_qa"},
            {"from": "gpt", "value": "Antarctica"},
        ],
        "id": 2,
        "src": "x",
    },
]


def run(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def test_convert_chain_items_jsonl_parquet_sharegpt_items(tmp_path: Path) -> None:
    src = tmp_path / "nq.json"
    src.write_text(json.dumps(NQ_LIKE, indent=4), encoding="utf-8")
    steps = [
        (src, tmp_path / "a.jsonl", []),
        (tmp_path / "a.jsonl", tmp_path / "b.parquet", []),
        (tmp_path / "b.parquet", tmp_path / "c.json", ["--output-format", "sharegpt"]),
        (tmp_path / "c.json", tmp_path / "d.json", ["-t", "items"]),
    ]
    for a, b, extra in steps:
        res = run("convert", a, b, *extra)
        assert res.exit_code == 0, res.output
        assert (
            "read 3 records" in res.output
            and "wrote 3" in res.output
            and "rejected 0" in res.output
        )
    assert json.loads((tmp_path / "d.json").read_text()) == NQ_LIKE
    assert not list(tmp_path.glob("*.rejected.jsonl"))


def test_convert_gsm8k_like_through_fields(tmp_path: Path) -> None:
    rows = [
        {
            "question": "Ann has 4 pens and gives away 1. How many are left?",
            "answer": "4 - 1 = 3\n#### 3",
        },
        {"question": "What is 6 times 7?", "answer": "6 * 7 = 42\n#### 42"},
    ]
    src = write_jsonl(tmp_path / "gsm.jsonl", rows)
    res = run(
        "convert",
        src,
        tmp_path / "gsm.json",
        "--fields",
        "instruction=question,response=answer",
        "-t",
        "sharegpt",
    )
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "gsm.json").read_text())
    assert out[0]["conversations"] == [
        {"from": "human", "value": rows[0]["question"]},
        {"from": "gpt", "value": rows[0]["answer"]},
    ]
    res = run(
        "convert",
        tmp_path / "gsm.json",
        tmp_path / "back.jsonl",
        "-t",
        "fields",
        "--output-fields",
        "instruction=question,response=answer",
    )
    assert res.exit_code == 0, res.output
    assert [json.loads(line) for line in (tmp_path / "back.jsonl").read_text().splitlines()] == rows
    # keeping the fields format (the default) gives the same file back
    res = run(
        "convert", src, tmp_path / "same.jsonl", "--fields", "instruction=question,response=answer"
    )
    assert (
        res.exit_code == 0
        and [json.loads(x) for x in (tmp_path / "same.jsonl").read_text().splitlines()] == rows
    )


def test_convert_reports_and_saves_rejects(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps(NQ_LIKE[0])
        + "\n{broken\n"
        + json.dumps({"id": "q", "items": [{"from": "gpt", "value": 3}]})
        + "\n"
        + json.dumps(NQ_LIKE[1])
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    res = run("convert", src, out)
    assert res.exit_code == 1, res.output  # as `realign run`: 1 when any record failed
    assert f"{src}:2: malformed JSON" in res.output
    assert f"{src}:3 (id q): items[0].value: expected a string, got int" in res.output
    assert "read 2 records" in res.output and "wrote 2" in res.output and "rejected 2" in res.output
    assert len(out.read_text().splitlines()) == 2
    rejected = [json.loads(x) for x in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    assert [(r["line"], r.get("field")) for r in rejected] == [(2, None), (3, "items[0].value")]
    assert rejected[0]["text"] == "{broken"
    assert rejected[1]["record"]["id"] == "q"


def test_convert_write_rejects_are_reported(tmp_path: Path) -> None:
    multi = {
        "items": [
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "b"},
            {"from": "human", "value": "c"},
            {"from": "gpt", "value": "d"},
        ],
        "id": 9,
    }
    src = write_jsonl(tmp_path / "in.jsonl", [NQ_LIKE[0], multi])
    res = run(
        "convert",
        src,
        tmp_path / "o.jsonl",
        "-t",
        "fields",
        "--output-fields",
        "instruction=q,response=a",
    )
    assert res.exit_code == 1, res.output  # a record was rejected
    assert "(id 9)" in res.output and "one instruction and one response" in res.output
    assert "rejected 1 (0 unreadable, 1 unwritable)" in res.output


def test_convert_strict_stops_with_exit_1_and_no_output(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(NQ_LIKE[0]) + "\n[1]\n" + json.dumps(NQ_LIKE[1]) + "\n")
    out = tmp_path / "out.jsonl"
    res = run("convert", src, out, "--strict")
    assert res.exit_code == 1
    assert f"{src}:2: expected a JSON object, got array" in res.output
    assert "--strict" in res.output
    assert not out.exists()
    assert (tmp_path / "out.rejected.jsonl").exists()


def test_convert_unknown_format_fails_with_hint(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    res = run("convert", src, tmp_path / "o.jsonl")
    assert res.exit_code == 2
    assert (
        "unknown format" in res.output
        and "--fields instruction=question,response=answer" in res.output
    )
    assert not (tmp_path / "o.jsonl").exists()


def test_convert_empty_file_fails(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("")
    res = run("convert", tmp_path / "e.jsonl", tmp_path / "o.jsonl")
    assert res.exit_code == 2 and "file is empty" in res.output
    assert not (tmp_path / "o.rejected.jsonl").exists()  # stopped before any work


def test_convert_bad_output_type(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", NQ_LIKE)
    res = run("convert", src, tmp_path / "o.csv")
    assert res.exit_code == 2 and "unknown output type '.csv'" in res.output
    res = run("convert", src, src)
    assert res.exit_code == 2 and "would overwrite the input" in res.output


def test_stats_json(tmp_path: Path) -> None:
    meta = {
        "status": "rewritten",
        "units": [
            {
                "turn": 1,
                "task_type": "open_qa",
                "status": "rewritten",
                "evidence": [
                    {"snippet": "s1", "url": "https://www.example.org/a"},
                    {"snippet": "s2", "url": "https://en.wikipedia.org/wiki/X"},
                ],
            }
        ],
    }
    objs = [
        {**NQ_LIKE[0], "realign": meta},
        NQ_LIKE[2],
        {
            "items": [
                {"from": "human", "value": "hi", "category": "default"},
                {"from": "gpt", "value": "hello there"},
                {"from": "human", "value": "plan my day", "category": "planning"},
                {"from": "gpt", "value": ""},
            ]
        },
        {"items": [{"from": "human", "value": "unanswered"}]},
    ]
    src = write_jsonl(tmp_path / "s.jsonl", objs)
    with (tmp_path / "s.jsonl").open("a") as f:
        f.write("not json\n")
    res = run("stats", src, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["format"] == "items"
    assert (data["records"], data["rejected"], data["turns"]) == (4, 1, 9)
    assert (data["single_turn"], data["multi_turn"]) == (3, 1)
    assert (data["units"], data["no_response"], data["empty_final_response"]) == (4, 1, 1)
    assert data["task_types"] == {"open_qa": 2, "default": 1, "planning": 1}
    assert data["task_type_source"] == {"realign": 1, "input": 3}
    assert data["realign"] == {
        "records_with_metadata": 1,
        "status": {"rewritten": 1},
        "unit_status": {"rewritten": 1},
    }
    assert data["evidence"] == {
        "records_with_evidence": 1,
        "snippets": 2,
        "top_domains": {"example.org": 1, "en.wikipedia.org": 1},
    }
    toks = data["tokens"]["response"]
    assert toks["count"] == 4 and toks["max"] >= 4 and toks["median"] > 0
    assert "s.jsonl:5: malformed JSON" in res.stderr


def test_stats_table_on_examples() -> None:
    res = run("stats", EXAMPLES / "realign_items.json")
    assert res.exit_code == 0, res.output
    assert "records" in res.output and "20" in res.output
    assert "math_puzzles" in res.output


def test_examples_are_consistent() -> None:
    items = json.loads((EXAMPLES / "realign_items.json").read_text(encoding="utf-8"))
    sharegpt = [
        json.loads(x)
        for x in (EXAMPLES / "sharegpt.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert len(items) == len(sharegpt) == 20
    for a, b in zip(items, sharegpt, strict=True):
        assert a["id"] == b["id"]
        assert [t["value"] for t in a["items"]] == [t["value"] for t in b["conversations"]]
    res = run("stats", EXAMPLES / "sharegpt.jsonl", "--json")
    data = json.loads(res.stdout)
    assert data["multi_turn"] >= 3 and data["rejected"] == 0
    assert len(data["task_types"]) >= 10
    labelled = sum(any("category" in t for t in r["items"]) for r in items)
    assert 8 <= labelled <= 12
    assert any("#### " in t["value"] for r in items for t in r["items"])


def test_help_teaches() -> None:
    for cmd in ("convert", "stats"):
        res = run(cmd, "--help")
        assert res.exit_code == 0
        assert "Example" in res.output and "--input-format" in res.output
