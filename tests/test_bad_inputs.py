"""The bad-input corpus: every input record ends up in exactly one of the two files, and an
input that is unusable as a whole stops the command with one `error:` line and exit 2.

Each bad input is built here. A per-record case runs the real `realign run` (in process,
fake backend) on good records around one bad one and checks that the bad record is a named
`load` failure (its line or id and its field, with the input text or object kept) while every
other record is in the output: records in == output + failures. The same input through
`realign convert` lands in the output and the rejected file the same way. A whole-input case
checks exit 2, exactly one `error:` line on stderr and no traceback, for `run`, `classify`,
`convert` and `stats` where the case applies.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packs import write_pack
from typer.testing import CliRunner, Result

from realign.cli.main import app
from realign.pipeline.runner import process_items
from realign.pipeline.state import RunState
from realign.records import Record, Turn

runner = CliRunner()


def good(i: int) -> dict:
    return {"id": f"g{i}", "instruction": f"Who wrote book {i}?", "input": "", "output": f"A{i}."}


def sharegpt(i: int) -> dict:
    return {
        "id": f"g{i}",
        "conversations": [
            {"from": "human", "value": f"Who wrote book {i}?"},
            {"from": "gpt", "value": f"Author {i}."},
        ],
    }


def messages(i: int) -> dict:
    return {
        "id": f"g{i}",
        "messages": [
            {"role": "user", "content": f"Who wrote book {i}?"},
            {"role": "assistant", "content": f"Author {i}."},
        ],
    }


def lines(bad: bytes | str, make: Callable[[int], dict] = good) -> bytes:
    """Three good JSON Lines records around one bad line (the bad one is line 3)."""
    bad = bad.encode() if isinstance(bad, str) else bad
    rows = [json.dumps(make(0)).encode(), json.dumps(make(1)).encode(), bad]
    rows.append(json.dumps(make(2)).encode())
    return b"\n".join(rows) + b"\n"


def array(bad: bytes | str, make: Callable[[int], dict] = good, indent: int | None = 2) -> bytes:
    """A .json array of three good records around one bad one (the third element)."""
    bad = bad.encode() if isinstance(bad, str) else bad
    parts = [json.dumps(make(i), indent=indent).encode() for i in range(3)]
    return b"[\n" + b",\n".join([parts[0], parts[1], bad, parts[2]]) + b"\n]\n"


def alpaca_with(**fields: object) -> str:
    return json.dumps({"id": "bad", "instruction": "q", "input": "", "output": "a", **fields})


def raw_alpaca(body: str) -> str:
    """An alpaca record written by hand (to hold escapes json.dumps would not write)."""
    return '{"id": "bad", ' + body + "}"


def deep(levels: int) -> str:
    return alpaca_with(extra="X").replace('"X"', "[" * levels + "]" * levels)


@dataclass(frozen=True)
class Bad:
    """One bad record among three good ones; `where` and `field` must appear in its error."""

    name: str
    content: bytes
    where: str
    field: str | None = None
    ext: str = ".jsonl"
    args: tuple[str, ...] = ()


SUR = "\\ud800"  # a lone high surrogate, as a JSON escape
BAD_RECORDS = [
    Bad("malformed_line", lines("{not json"), ":3"),
    Bad("truncated_line", lines('{"id": "bad", "instruction": "q", "outp'), ":3"),
    Bad("text_after_the_object", lines(alpaca_with() + " trailing"), ":3"),
    Bad("array_not_object", lines("[1, 2]"), ":3"),
    Bad("string_not_object", lines('"hello"'), ":3"),
    Bad("null_not_object", lines("null"), ":3"),
    Bad("number_not_object", lines("42"), ":3"),
    Bad(
        "undecodable_bytes",
        lines(b'{"id": "bad", "instruction": "caf\xe9", "output": "a"}'),
        "(id bad)",
        "instruction",
    ),
    Bad(
        "surrogate_in_instruction",
        lines(raw_alpaca(f'"instruction": "q{SUR}", "output": "a"')),
        "(id bad)",
        "instruction",
    ),
    Bad(
        "surrogate_in_output",
        lines(raw_alpaca(f'"instruction": "q", "output": "a{SUR}"')),
        "(id bad)",
        "output",
    ),
    Bad(
        "surrogate_in_input",
        lines(raw_alpaca(f'"instruction": "q", "input": "{SUR}", "output": "a"')),
        "(id bad)",
        "input",
    ),
    Bad(
        "surrogate_in_system",
        lines(raw_alpaca(f'"instruction": "q", "output": "a", "system": "s{SUR}"')),
        "(id bad)",
        "system",
    ),
    Bad(
        "surrogate_in_history",
        lines(raw_alpaca(f'"instruction": "q", "output": "a", "history": [["h", "{SUR}"]]')),
        "(id bad)",
        "history[0][1]",
    ),
    Bad(
        "surrogate_in_extra_field",
        lines(raw_alpaca(f'"instruction": "q", "output": "a", "note": "{SUR}"')),
        "(id bad)",
        "note",
    ),
    Bad(
        "surrogate_in_a_key",
        lines(raw_alpaca(f'"instruction": "q", "output": "a", "k{SUR}": 1')),
        "(id bad)",
        "k\\ud800 (key)",
    ),
    Bad(
        "surrogate_in_the_id",
        lines('{"id": "b\\ud800", "instruction": "q", "output": "a"}'),
        "(id b\\ud800)",
        "id",
    ),
    Bad(
        "low_surrogate_alone",
        lines(raw_alpaca('"instruction": "q", "output": "\\udc00"')),
        "(id bad)",
        "output",
    ),
    Bad(
        "surrogate_in_sharegpt_value",
        lines(
            '{"id": "bad", "conversations": [{"from": "human", "value": "q"}, '
            f'{{"from": "gpt", "value": "{SUR}"}}]}}',
            sharegpt,
        ),
        "(id bad)",
        "conversations[1].value",
    ),
    Bad("nested_beyond_the_parser", lines(deep(100_000)), ":3"),
    Bad("nested_beyond_the_limit", lines(deep(150)), "(id bad)"),
    Bad("instruction_null", lines(alpaca_with(instruction=None)), "(id bad)", "instruction"),
    Bad("instruction_a_list", lines(alpaca_with(instruction=["q"])), "(id bad)", "instruction"),
    Bad("output_an_object", lines(alpaca_with(output={"a": 1})), "(id bad)", "output"),
    Bad(
        "output_missing", lines(json.dumps({"id": "bad", "instruction": "q"})), "(id bad)", "output"
    ),
    Bad("history_not_a_list", lines(alpaca_with(history="h")), "(id bad)", "history"),
    Bad(
        "history_pair_of_three",
        lines(alpaca_with(history=[["a", "b", "c"]])),
        "(id bad)",
        "history[0]",
    ),
    Bad("id_an_object", lines(alpaca_with(id={"x": 1})), ":3", "id"),
    Bad(
        "realign_metadata_invalid",
        lines(alpaca_with(realign={"status": "bogus"})),
        "(id bad)",
        "realign.status",
    ),
    Bad(
        "record_over_the_size_limit",
        lines(alpaca_with(output="x" * 30_000)),
        "(id bad)",
        "output",
        args=("--max-record-mb", "0.02"),
    ),
    Bad(
        "unknown_role",
        lines('{"id": "bad", "conversations": [{"from": "robot", "value": "q"}]}', sharegpt),
        "(id bad)",
        "conversations[0].from",
    ),
    Bad(
        "turns_not_a_list",
        lines('{"id": "bad", "conversations": "hi"}', sharegpt),
        "(id bad)",
        "conversations",
    ),
    Bad(
        "turn_without_value",
        lines('{"id": "bad", "conversations": [{"from": "human"}]}', sharegpt),
        "(id bad)",
        "conversations[0].value",
    ),
    Bad(
        "turn_value_a_number",
        lines('{"id": "bad", "conversations": [{"from": "human", "value": 7}]}', sharegpt),
        "(id bad)",
        "conversations[0].value",
    ),
    Bad(
        "turn_a_string",
        lines('{"id": "bad", "conversations": ["hi"]}', sharegpt),
        "(id bad)",
        "conversations[0]",
    ),
    Bad(
        "image_content_part",
        lines(
            json.dumps(
                {
                    "id": "bad",
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": "x"}}],
                        }
                    ],
                }
            ),
            messages,
        ),
        "(id bad)",
        "messages[0].content[0]",
    ),
    Bad(
        "message_without_role",
        lines(json.dumps({"id": "bad", "messages": [{"content": "q"}]}), messages),
        "(id bad)",
        "messages[0].role",
    ),
    Bad(
        "json_array_missing_comma",
        array('{"id": "bad", "instruction": "q" "output": "a"}'),
        ":",
        ext=".json",
    ),
    Bad(
        "json_array_trailing_comma_in_record",
        array('{"id": "bad", "instruction": "q", "output": "a",}'),
        ":",
        ext=".json",
    ),
    Bad(
        "json_array_unterminated_string",
        array('{"id": "bad", "instruction": "q, "output": "a"}', indent=None),
        ":",
        ext=".json",
    ),
    Bad("json_array_single_quotes", array("{'id': 'bad'}"), ":", ext=".json"),
    Bad("json_array_bare_word", array("nonsense"), ":", ext=".json"),
    Bad("json_array_deep_nesting", array(deep(100_000)), ":", ext=".json"),
    Bad(
        "json_array_lone_surrogate",
        array(raw_alpaca(f'"instruction": "{SUR}", "output": "a"')),
        "(id bad)",
        "instruction",
        ext=".json",
    ),
    Bad(
        "json_array_undecodable_bytes",
        array(b'{"id": "bad", "instruction": "q", "output": "\xff\xfe"}'),
        "(id bad)",
        "output",
        ext=".json",
    ),
    Bad(
        "json_array_wrong_type",
        array('{"id": "bad", "instruction": 1.5e3, "output": null}'),
        "(id bad)",
        "output",
        ext=".json",
    ),
]


def invoke(*args: object, **kw: object) -> Result:
    return runner.invoke(app, [str(a) for a in args], **kw)


def read_lines(path: Path) -> list[dict]:
    return (
        [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        if (path.exists())
        else []
    )


def output_ids(path: Path) -> list[str]:
    if path.suffix == ".json":
        return [r["id"] for r in json.loads(path.read_text(encoding="utf-8"))]
    return [r["id"] for r in read_lines(path)]


@pytest.mark.parametrize("case", BAD_RECORDS, ids=lambda c: c.name)
def test_bad_record_is_a_named_failure_and_the_others_go_on(tmp_path: Path, case: Bad) -> None:
    src = tmp_path / f"in{case.ext}"
    src.write_bytes(case.content)
    out = tmp_path / f"out{case.ext}"
    pack = write_pack(tmp_path / "pack")
    res = invoke("run", src, "-o", out, "--backend", "fake", "--pack", pack, *case.args)
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.exit_code == 1, res.output
    assert output_ids(out) == ["g0", "g1", "g2"]
    (fail,) = read_lines(tmp_path / "out.failures.jsonl")
    assert fail["stage"] == "load" and fail["index"] == 2
    # named: file and line (or id), then the field
    assert re.match(re.escape(str(src)) + r":\d+[ :]", fail["error"]), fail["error"]
    assert case.where in fail["error"]
    if case.field is not None:
        assert f"): {case.field}: " in fail["error"] or f":3: {case.field}: " in fail["error"]
    assert fail["record"] or fail["raw_output"], "the input must be kept in the failure line"
    assert "retry" not in res.stderr and "fix them there" in res.stderr  # rerunning won't help

    # convert: the same record is rejected, the others converted
    conv = tmp_path / f"conv{case.ext}"
    res = invoke("convert", src, conv, *case.args)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output  # as `run`
    assert output_ids(conv) == ["g0", "g1", "g2"]
    (rejected,) = read_lines(tmp_path / "conv.rejected.jsonl")
    assert rejected["index"] == 2 and ("record" in rejected or "text" in rejected)


def test_failure_line_keeps_the_text_of_an_unparsable_record(tmp_path: Path) -> None:
    bad = raw_alpaca(f'"instruction": "q{SUR}", "output": "a"')
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(bad))
    res = invoke(
        "run",
        src,
        "-o",
        tmp_path / "out.jsonl",
        "--backend",
        "fake",
        "--pack",
        write_pack(tmp_path / "pack"),
    )
    assert res.exit_code == 1, res.output
    (fail,) = read_lines(tmp_path / "out.failures.jsonl")
    assert fail["raw_output"] == bad  # losslessly: the escape is kept as written
    assert "lone surrogate \\ud800" in fail["error"]


@pytest.mark.parametrize(
    "name, content",
    [
        ("duplicate_ids", lines(json.dumps(good(1)))),
        ("empty_conversation", lines('{"id": "bad", "conversations": []}', sharegpt)),
        ("utf8_bom", b"\xef\xbb\xbf" + lines(json.dumps(good(9)))),
    ],
)
def test_accepted_oddities_all_reach_the_output(tmp_path: Path, name: str, content: bytes) -> None:
    """Not errors: both duplicates are kept (records are told apart by position), a record
    with no turns passes through with its reason, a UTF-8 byte order mark is skipped."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out.jsonl"
    res = invoke(
        "run", src, "-o", out, "--backend", "fake", "--pack", write_pack(tmp_path / "pack")
    )
    assert res.exit_code == 0, res.output
    assert len(output_ids(out)) == 4 and not read_lines(tmp_path / "out.failures.jsonl")


def test_truncated_json_array_fails_the_cut_record_only(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    src.write_text(json.dumps([good(i) for i in range(4)], indent=2)[:-30])
    out = tmp_path / "out.json"
    res = invoke(
        "run", src, "-o", out, "--backend", "fake", "--pack", write_pack(tmp_path / "pack")
    )
    assert res.exit_code == 1, res.output
    assert output_ids(out) == ["g0", "g1", "g2"]
    (fail,) = read_lines(tmp_path / "out.failures.jsonl")
    assert fail["index"] == 3 and f"{src}:" in fail["error"] and fail["raw_output"]


# ---------------------------------------------------------------- whole-input errors


def truncated_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([good(i) for i in range(3)]), path)
    path.write_bytes(path.read_bytes()[:-20])


ALL_COMMANDS = ("run", "classify", "convert", "stats", "retrieve", "filter", "judge")
WITH_FIELDS = ("run", "classify", "convert", "stats", "filter", "judge")
WITH_PACK = ("run", "classify", "retrieve", "judge")


@dataclass(frozen=True)
class Whole:
    name: str
    filename: str
    make: Callable[[Path], object] | None  # writes the input; None: nothing at that path
    expect: str  # in the error line
    args: tuple[str, ...] = ()
    commands: tuple[str, ...] = ALL_COMMANDS


def text(content: bytes) -> Callable[[Path], object]:
    return lambda p: p.write_bytes(content)


GOOD_LINES = b"".join(json.dumps(good(i)).encode() + b"\n" for i in range(3))
WHOLE = [
    Whole("empty_jsonl", "in.jsonl", text(b""), "file is empty"),
    Whole("blank_jsonl", "in.jsonl", text(b"\n  \n\n"), "file is empty"),
    Whole("empty_json", "in.json", text(b""), "file is empty"),
    Whole("utf16", "in.jsonl", text(GOOD_LINES.decode().encode("utf-16")), "UTF-16"),
    Whole("json_not_an_array", "in.json", text(b'"hello"'), "expected a JSON array"),
    Whole("json_garbage_first", "in.json", text(b"nope\n[]"), "expected a JSON array"),
    Whole("directory", "data", lambda p: p.mkdir(), "is a folder"),
    Whole("csv", "in.csv", text(b"instruction,output\nq,a\n"), "unknown file type '.csv'"),
    Whole("txt", "in.txt", text(GOOD_LINES), "unknown file type '.txt'"),
    Whole("truncated_parquet", "in.parquet", truncated_parquet, "not a readable Parquet file"),
    Whole("missing_file", "nope.jsonl", None, "no such file"),
    Whole(
        "unknown_format",
        "in.jsonl",
        text(b'{"question": "q", "answer": "a"}\n'),
        "--fields instruction=question,response=answer",
    ),
    Whole(
        "ambiguous_format",
        "in.jsonl",
        text(b'{"instruction": "q", "output": "a", "messages": []}\n'),
        "ambiguous format",
    ),
    Whole(
        "unknown_input_format",
        "in.jsonl",
        text(GOOD_LINES),
        "unknown --input-format",
        args=("--input-format", "bogus"),
    ),
    Whole(
        "bad_fields_mapping",
        "in.jsonl",
        text(GOOD_LINES),
        "--fields",
        args=("--fields", "instruction"),
        commands=WITH_FIELDS,
    ),
    Whole(
        "fields_without_mapping",
        "in.jsonl",
        text(GOOD_LINES),
        "--fields",
        args=("--input-format", "fields"),
        commands=WITH_FIELDS,
    ),
    Whole(
        "missing_criteria_folder",
        "in.jsonl",
        text(GOOD_LINES),
        "not a folder",
        args=("--criteria", "no/such/dir"),
        commands=WITH_PACK,
    ),
    Whole(
        "unknown_pack",
        "in.jsonl",
        text(GOOD_LINES),
        "no built-in criteria pack",
        args=("--pack", "nosuchpack"),
        commands=WITH_PACK,
    ),
    Whole(
        "empty_pack_folder",
        "in.jsonl",
        text(GOOD_LINES),
        "no criteria files",
        args=("--pack", "./emptypack"),
        commands=WITH_PACK,
    ),
    Whole("hf_offline", "hf:nobody/nothing", None, "cannot open the Hugging Face dataset"),
]


@pytest.mark.parametrize(
    "case, command",
    [(c, cmd) for c in WHOLE for cmd in c.commands],
    ids=lambda x: x if isinstance(x, str) else x.name,
)
def test_unusable_input_is_one_error_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Whole, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    (tmp_path / "emptypack").mkdir()
    src = case.filename if case.filename.startswith("hf:") else tmp_path / case.filename
    if case.make is not None:
        case.make(Path(src))
    out = tmp_path / "out.jsonl"
    args: list[object] = [command, src]
    if command in ("run", "classify", "filter", "judge"):
        args += ["-o", out, "--backend", "fake"]
    elif command == "retrieve":
        args += ["-o", out, "--retrieval", "none", "--classifier", "none"]
    if command in WITH_PACK and "--pack" not in case.args:
        args += ["--pack", write_pack(tmp_path / "pack")]
    elif command == "convert":
        args.append(out)
    res = invoke(*args, *case.args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and case.expect in res.stderr, res.stderr
    assert not out.exists() and not (tmp_path / "out.failures.jsonl").exists()
    assert not list(tmp_path.glob(".out.jsonl.realign-state*"))  # no run was started


def test_a_realign_folder_in_the_working_directory_does_not_replace_the_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running from a clone's parent: `realign` is the clone, not a criteria pack."""
    (tmp_path / "realign" / "src").mkdir(parents=True)
    (tmp_path / "realign" / "README.md").write_text("a clone\n")
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD_LINES)
    res = invoke("classify", src, "-o", tmp_path / "out.jsonl", "--backend", "fake")
    assert res.exit_code == 0, res.output
    assert len(read_lines(tmp_path / "out.jsonl")) == 3
    # an explicit path still means the folder
    res = invoke(
        "classify", src, "-o", tmp_path / "o2.jsonl", "--backend", "fake", "--pack", "./realign"
    )
    assert res.exit_code == 2 and "no criteria files" in res.stderr


# ---------------------------------------------------------------- results that cannot be saved


def _records(n: int) -> list[Record]:
    return [
        Record(
            id=f"g{i}",
            index=i,
            turns=[Turn(role="user", content="q"), Turn(role="assistant", content="a")],
            source_format="alpaca",
            raw=good(i),
        )
        for i in range(n)
    ]


def test_a_lone_surrogate_in_a_result_is_that_records_failure(tmp_path: Path) -> None:
    """A model's answer can hold a lone surrogate (a JSON escape); saving it must fail that
    record, named, not the run."""
    state = RunState(tmp_path / "state.sqlite", "fp")

    async def work(rec: Record) -> Record:
        await asyncio.sleep(0)
        if rec.index == 1:
            rec.turns[1].content = "half \ud800 a pair"
        if rec.index == 2:
            raise ValueError("the model said \udc00")
        return rec

    counts = asyncio.run(
        process_items(
            _records(4), state, work, stage="rewrite", window=4, record_of=lambda r: r.raw
        )
    )
    assert (counts.ok, counts.failed) == (2, 2)
    fails = {f["index"]: f for f in map(json.loads, state.iter_payloads(ok=False))}
    assert "turns[1].content holds a lone surrogate" in fails[1]["error"]
    assert fails[1]["stage"] == "rewrite" and fails[1]["record"] == good(1)
    assert fails[2]["error"] == "ValueError: the model said \\udc00"
    state.close()


def test_an_input_failing_midway_lets_the_records_in_flight_be_committed(tmp_path: Path) -> None:
    state = RunState(tmp_path / "state.sqlite", "fp")

    def items() -> Iterator[Record]:
        yield from _records(3)
        raise RuntimeError("the input broke")

    async def work(rec: Record) -> Record:
        await asyncio.sleep(0.05)
        return rec

    with pytest.raises(RuntimeError, match="the input broke"):
        asyncio.run(
            process_items(items(), state, work, stage="run", window=8, record_of=lambda r: r.raw)
        )
    assert state.count(ok=True) == 3  # committed before the error stopped the run
    state.close()


def test_filter_names_an_unreadable_record_as_one_to_fix_not_to_retry(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(lines(raw_alpaca(f'"instruction": "q{SUR}", "output": "a"')))
    out = tmp_path / "out.jsonl"
    res = invoke("filter", src, "-o", out, "--backend", "fake", env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    kept, dropped = read_lines(out), read_lines(tmp_path / "out.dropped.jsonl")
    (fail,) = read_lines(tmp_path / "out.failures.jsonl")
    assert len(kept) + len(dropped) == 3 and fail["stage"] == "load"
    assert "fix them there" in res.stderr and "retry" not in res.stderr


@pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # our own fake server only
def test_bad_records_among_many_in_flight_through_the_real_command(tmp_path: Path) -> None:
    """`realign run` in its own process against the loopback server, with records in flight
    (concurrency 8, latency) around a lone surrogate, deep nesting and a broken .json record:
    each is its own named failure, the run finishes, every other record is written."""
    import subprocess
    import sys

    from subprocess_runs import realign_run_argv, run_env

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from fake_openai_server import ServerConfig, serve_in_subprocess

    objs = [json.dumps(good(i), indent=1) for i in range(40)]
    objs[5] = raw_alpaca(f'"instruction": "q{SUR}", "output": "a"')
    objs[17] = deep(100_000)
    objs[29] = '{"id": "bad", "instruction": "q" "output": "a"}'
    src = tmp_path / "in.json"
    src.write_text("[\n" + ",\n".join(objs) + "\n]\n")
    out = tmp_path / "out.json"
    with serve_in_subprocess(ServerConfig(latency=0.05, seed=1)) as url:
        argv = realign_run_argv(src, out, write_pack(tmp_path / "pack"), url, concurrency=8)
        p = subprocess.run(argv, env=run_env(tmp_path / "home", "sk-test"), capture_output=True)
    stderr = p.stderr.decode()
    assert p.returncode == 1 and "Traceback" not in stderr, stderr
    assert output_ids(out) == [f"g{i}" for i in range(40) if i not in (5, 17, 29)]
    fails = read_lines(tmp_path / "out.failures.jsonl")
    assert [f["index"] for f in fails] == [5, 17, 29]
    assert "lone surrogate" in fails[0]["error"] and "nested" in fails[1]["error"]
    assert "malformed JSON" in fails[2]["error"] and all(f["raw_output"] for f in fails)
