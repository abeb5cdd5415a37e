"""Values are never changed silently, and the inputs users really have are read as they are.

- NaN / Infinity / numbers beyond float range: a named `load` failure in a text field (or an
  id), carried unchanged elsewhere; a JSON output fails the record instead of writing `NaN`
  (not JSON) or `null`, and every file realign writes stays valid JSON.
- Parquet columns of any Arrow type round-trip to a Parquet output with their types, and go to
  JSON by the documented rule (base64, ISO 8601, decimal strings, map pairs).
- `.jsonl.gz` / `.json.gz` / `.jsonl.zst`, a pretty-printed array saved as `.jsonl`, nested
  `--fields` paths, a task type column, a FIFO, `/dev/null`, a missing `hf:` split.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import math
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from packs import write_pack
from typer.testing import CliRunner, Result

from realign.cli.main import app
from realign.io.emit import from_record
from realign.io.formats import FieldMap, to_record

runner = CliRunner()


def invoke(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def strict_json(text: str) -> Any:
    """Parse as standard JSON: NaN / Infinity are not JSON."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} written: not valid JSON")

    return json.loads(text, parse_constant=refuse)


def jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [strict_json(line) for line in f if line.strip()]


def good(i: int) -> dict:
    return {"id": f"g{i}", "instruction": f"Who wrote book {i}?", "input": "", "output": f"A{i}."}


def around(bad: str) -> str:
    """Two good JSON Lines records, the bad one (hand-written text), one more good one."""
    rows = [json.dumps(good(0)), json.dumps(good(1)), bad, json.dumps(good(2))]
    return "\n".join(rows) + "\n"


def run(tmp_path: Path, src: Path, out: Path, *args: object) -> Result:
    res = invoke(
        "run", src, "-o", out, "--backend", "fake", "--pack", write_pack(tmp_path / "pack"), *args
    )
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    return res


def one_error_line(res: Result) -> str:
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1, res.output
    assert "Traceback" not in res.output
    return errors[0]


# ---------------------------------------------------------------- NaN, Infinity, 1e400


@pytest.mark.parametrize(
    "bad, field, token",
    [
        ('{"id": "bad", "instruction": "q", "input": NaN, "output": "a"}', "input", "NaN"),
        ('{"id": "bad", "instruction": Infinity, "output": "a"}', "instruction", "Infinity"),
        ('{"id": "bad", "instruction": "q", "output": -Infinity}', "output", "-Infinity"),
        ('{"id": "bad", "instruction": "q", "output": "a", "system": NaN}', "system", "NaN"),
    ],
)
def test_non_finite_number_in_a_text_field_is_a_named_load_failure(
    tmp_path: Path, bad: str, field: str, token: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(around(bad))
    res = run(tmp_path, src, tmp_path / "out.jsonl")
    assert res.exit_code == 1, res.output
    assert [r["id"] for r in jsonl(tmp_path / "out.jsonl")] == ["g0", "g1", "g2"]
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")  # valid JSON: no NaN token
    assert fail["stage"] == "load" and fail["index"] == 2
    assert f"{src}:3 (id bad): {field}: {token} is not text" in fail["error"]
    assert fail["record"][field] == token  # kept, as the string JSON can hold


@pytest.mark.parametrize(
    "bad, field",
    [
        ('{"id": 1e400, "instruction": "q", "output": "a"}', "id"),
        ('{"id": "bad", "instruction": "q", "output": "a", "n": -2.5E+999}', "n"),
    ],
)
def test_number_beyond_float_range_is_a_load_failure_with_its_text(
    tmp_path: Path, bad: str, field: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(around(bad))
    res = run(tmp_path, src, tmp_path / "out.parquet")  # not even Parquet could keep it
    assert res.exit_code == 1, res.output
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")
    assert fail["stage"] == "load" and f"{src}:3" in fail["error"]
    assert f": {field}: the number " in fail["error"] and "beyond the range of a float" in (
        fail["error"]
    )
    assert fail["raw_output"] == bad  # the record exactly as written


@pytest.mark.parametrize("ext", [".jsonl", ".json"])
def test_integer_too_long_to_parse_is_a_load_failure(tmp_path: Path, ext: str) -> None:
    bad = '{"id": "bad", "instruction": "q", "output": "a", "n": ' + "9" * 5000 + "}"
    src = tmp_path / f"in{ext}"
    if ext == ".jsonl":
        src.write_text(around(bad))
    else:
        src.write_text("[\n" + ",\n".join(around(bad).splitlines()) + "\n]\n")
    res = run(tmp_path, src, tmp_path / "out.jsonl")
    assert res.exit_code == 1, res.output
    assert [r["id"] for r in jsonl(tmp_path / "out.jsonl")] == ["g0", "g1", "g2"]
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")
    assert fail["stage"] == "load" and fail["index"] == 2
    assert "an integer of more than 4300 digits cannot be read" in fail["error"]
    assert fail["raw_output"] == bad


def test_nan_elsewhere_is_kept_by_parquet_and_fails_a_json_output_before_any_request(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(around('{"id": "bad", "instruction": "q", "output": "a", "score": NaN}'))
    res = run(tmp_path, src, tmp_path / "out.parquet")
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["g0", "g1", "bad", "g2"]
    assert math.isnan(rows[2]["score"])

    res = run(tmp_path, src, tmp_path / "out.jsonl")
    assert res.exit_code == 1, res.output
    assert [r["id"] for r in jsonl(tmp_path / "out.jsonl")] == ["g0", "g1", "g2"]
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")
    assert fail["stage"] == "load" and "(id bad): score: NaN cannot be written to" in fail["error"]
    assert fail["record"]["score"] == "NaN"
    # failed before the rewrite: no unit metadata, nothing classified for it
    assert "realign" not in fail["record"]


def test_huge_integer_is_carried_exactly_to_json(tmp_path: Path) -> None:
    digits = "1234567890" * 40  # 400 digits: beyond float and int64, still an exact integer
    src = tmp_path / "in.jsonl"
    src.write_text(around('{"id": "big", "instruction": "q", "output": "a", "n": ' + digits + "}"))
    res = run(tmp_path, src, tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out.jsonl").read_text()
    assert f'"n": {digits},' in text
    conv = tmp_path / "conv.jsonl"
    assert invoke("convert", src, conv).exit_code == 0
    assert f'"n": {digits}' in conv.read_text()


def test_convert_never_writes_nan(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(around('{"id": "bad", "instruction": "q", "output": "a", "w": Infinity}'))
    res = invoke("convert", src, tmp_path / "conv.jsonl")
    assert "Traceback" not in res.output and res.exit_code != 2, res.output
    assert [r["id"] for r in jsonl(tmp_path / "conv.jsonl")] == ["g0", "g1", "g2"]
    (rej,) = jsonl(tmp_path / "conv.rejected.jsonl")
    assert rej["field"] == "w" and rej["error"].startswith("Infinity is not a JSON number")
    assert rej["record"]["w"] == "Infinity"


# ---------------------------------------------------------------- Parquet types


def typed_parquet(path: Path, n: int = 3) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array([f"p{i}" for i in range(n)], pa.large_string()),
            "instruction": [f"Who wrote book {i}?" for i in range(n)],
            "output": [f"Author {i}." for i in range(n)],
            "blob": pa.array([bytes([i, 255, 0]) for i in range(n)], pa.binary()),
            "ts": pa.array(
                [dt.datetime(2024, 1, i + 1, 12, 30) for i in range(n)],
                pa.timestamp("ms", tz="UTC"),
            ),
            "day": pa.array([dt.date(2024, 2, i + 1) for i in range(n)], pa.date32()),
            "price": pa.array([Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
            "tags": pa.array(
                [[("a", i), ("b", i + 1)] for i in range(n)], pa.map_(pa.string(), pa.int32())
            ),
            "nested": pa.array([{"xs": [1, 2, i], "s": {"k": "v"}} for i in range(n)]),
            "score": pa.array([0.5 * i for i in range(n)], pa.float32()),
        }
    )
    pq.write_table(table, path)
    return table


EXTRA = ("id", "blob", "ts", "day", "price", "tags", "nested", "score")


def test_parquet_columns_of_any_type_round_trip_with_their_schema(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    table = typed_parquet(src)
    for cmd in ("run", "convert"):
        out = tmp_path / f"{cmd}.parquet"
        res = run(tmp_path, src, out) if cmd == "run" else invoke("convert", src, out)
        assert res.exit_code == 0, res.output
        back = pq.read_table(out)
        for name in EXTRA:
            assert back.schema.field(name).type == table.schema.field(name).type, name
            assert back[name].to_pylist() == table[name].to_pylist(), name


def test_parquet_types_go_to_json_by_the_documented_rule(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    typed_parquet(src)
    res = invoke("convert", src, tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    first = jsonl(tmp_path / "out.jsonl")[1]
    assert base64.b64decode(first["blob"]) == bytes([1, 255, 0])
    assert first["ts"] == "2024-01-02T12:30:00+00:00"
    assert first["day"] == "2024-02-02"
    assert first["price"] == "1.25"
    assert first["tags"] == [["a", 1], ["b", 2]]
    assert first["nested"] == {"xs": [1, 2, 1], "s": {"k": "v"}}
    # and through `run` (a binary column used to crash it when the result was saved)
    res = run(tmp_path, src, tmp_path / "run.jsonl")
    assert res.exit_code == 0, res.output
    rows = jsonl(tmp_path / "run.jsonl")
    assert [r["blob"] for r in rows] == [
        base64.b64encode(bytes([i, 255, 0])).decode() for i in range(3)
    ]


def test_parquet_nan_in_a_text_column_is_a_load_failure(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b"],
                "instruction": ["q1", "q2"],
                "input": pa.array([None, math.nan], pa.float64()),  # pandas' missing value
                "output": ["r1", "r2"],
            }
        ),
        src,
    )
    res = run(tmp_path, src, tmp_path / "out.parquet")
    assert res.exit_code == 1, res.output
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")
    assert fail["stage"] == "load" and fail["index"] == 1
    assert "record 1 (id b): input: NaN is not text" in fail["error"]


# ---------------------------------------------------------------- compressed files


def test_gzip_input_and_output_with_plain_side_files(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.write(around('{"id": "bad", "instruction": null, "output": "a"}'))
    out = tmp_path / "out.jsonl.gz"
    res = run(tmp_path, src, out)
    assert res.exit_code == 1, res.output
    assert [r["id"] for r in jsonl(out)] == ["g0", "g1", "g2"]
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")  # beside it, not out.jsonl.failures.jsonl
    assert f"{src}:3 (id bad): instruction: " in fail["error"]


def test_gzip_json_array_converts(tmp_path: Path) -> None:
    src = tmp_path / "in.json.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        json.dump([good(i) for i in range(3)], f, indent=2)
    out = tmp_path / "out.json.gz"
    assert invoke("convert", src, out).exit_code == 0
    with gzip.open(out, "rt", encoding="utf-8") as f:
        assert [r["id"] for r in strict_json(f.read())] == ["g0", "g1", "g2"]


def test_zstd_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("zstandard")
    src = tmp_path / "in.jsonl"
    src.write_text(around(json.dumps(good(9))))
    assert invoke("convert", src, tmp_path / "mid.jsonl.zst").exit_code == 0
    assert invoke("convert", tmp_path / "mid.jsonl.zst", tmp_path / "back.jsonl").exit_code == 0
    assert jsonl(tmp_path / "back.jsonl") == jsonl(src)
    assert (tmp_path / "mid.jsonl.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd magic


def test_zst_without_the_extra_is_one_error_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if the extra were not installed
    src = tmp_path / "in.jsonl"
    src.write_text(around(json.dumps(good(9))))
    zst = tmp_path / "in.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    for cmd in (
        ("convert", zst, tmp_path / "o.jsonl"),
        ("convert", src, tmp_path / "o.jsonl.zst"),
        ("run", src, "-o", tmp_path / "o.jsonl.zst", "--backend", "fake"),
    ):
        line = one_error_line(invoke(*cmd))
        assert "needs the `zstd` extra: pip install 'realign[zstd]'" in line
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))


@pytest.mark.parametrize("name", ["in.jsonl", "in.json"])
def test_gzip_bytes_under_a_plain_name_are_one_error(tmp_path: Path, name: str) -> None:
    src = tmp_path / name
    src.write_bytes(gzip.compress(around(json.dumps(good(9))).encode()))
    for cmd in (
        ("run", src, "-o", tmp_path / "o.jsonl", "--backend", "fake"),
        ("convert", src, tmp_path / "o.jsonl"),
    ):
        line = one_error_line(invoke(*cmd))
        assert f"file is gzip-compressed, not JSON text; name it {name}.gz" in line
    assert not (tmp_path / "o.jsonl").exists()


def test_damaged_gzip_is_one_error(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(b'{"id": "plain text, not gzip"}\n')
    line = one_error_line(invoke("convert", src, tmp_path / "o.jsonl"))
    assert "cannot decompress this gzip file" in line


# ---------------------------------------------------------------- a JSON array as .jsonl


@pytest.mark.parametrize("indent", [2, None], ids=["pretty", "one_line"])
def test_json_array_saved_as_jsonl_is_read_as_json(tmp_path: Path, indent: int | None) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps([good(i) for i in range(23)], indent=indent))
    res = run(tmp_path, src, tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    assert len(jsonl(tmp_path / "out.jsonl")) == 23 and not jsonl(tmp_path / "out.failures.jsonl")
    assert f"note: {src}: holds a JSON array, not JSON Lines" in res.stderr.replace("\n", " ")


def test_pretty_printed_objects_saved_as_jsonl_are_read_as_json(tmp_path: Path) -> None:
    """What `jq '.[]'` writes: one object after another, each over many lines."""
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(good(i), indent=2) for i in range(5)) + "\n")
    res = run(tmp_path, src, tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in jsonl(tmp_path / "out.jsonl")] == [f"g{i}" for i in range(5)]
    assert f"note: {src}: holds pretty-printed JSON, not JSON Lines" in res.stderr


# ---------------------------------------------------------------- nested fields, task type


SEED = [
    {
        "id": f"s{i}",
        "instruction": f"Make a plan for day {i}.",
        "instances": [{"input": "", "output": f"1. Rest {i}."}],
        "category": "planning",
    }
    for i in range(3)
]
SEED_FIELDS = "instruction=instruction,response=instances.0.output,task_type=category"


def test_nested_field_paths_are_read_patched_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "seed.jsonl"
    bad = {"id": "s9", "instruction": "x", "instances": []}
    src.write_text("".join(json.dumps(r) + "\n" for r in [*SEED, bad]))
    res = run(tmp_path, src, tmp_path / "out.jsonl", "--fields", SEED_FIELDS)
    assert res.exit_code == 1, res.output
    rows = jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in rows] == ["s0", "s1", "s2"]
    for r, seed in zip(rows, SEED, strict=True):
        unit = r["realign"]["units"][0]
        assert set(r) == {*seed, "realign"} and len(r["instances"]) == 1
        expected = seed["instances"][0]["output"]
        if unit["status"] == "rewritten":
            expected = unit["candidates"][unit["chosen"]]["response"]
        assert r["instances"][0]["output"] == expected
    (fail,) = jsonl(tmp_path / "out.failures.jsonl")
    assert "(id s9): instances.0.output: missing (instances has 0 items, no [0])" in fail["error"]

    res = run(tmp_path, src, tmp_path / "dry.jsonl", "--fields", SEED_FIELDS, "--dry-run")
    # the three readable records' units, typed by the column: three rewrites, no classify
    assert re.search(r"rewrite\s*│\s*3\s*│", res.stderr) and "classify" not in res.stderr, res.stderr


def test_nested_write_back_patches_the_nested_place() -> None:
    fields = FieldMap.parse("instruction=q.text,response=answers.1,id=meta.key")
    raw = {"q": {"text": "Q?"}, "answers": ["first", "second"], "meta": {"key": 7}, "x": 1}
    record = to_record(raw, 0, "fields", fields)
    assert record.id == "7" and record.instruction == "Q?" and record.response == "second"
    record.turns[1].content = "better"
    out = from_record(record, fields=fields)
    assert out == {"q": {"text": "Q?"}, "answers": ["first", "better"], "meta": {"key": 7}, "x": 1}
    assert raw["answers"] == ["first", "second"]  # the input object is never modified


def test_task_type_column_gives_the_records_task_type(tmp_path: Path) -> None:
    src = tmp_path / "seed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in SEED))
    res = run(tmp_path, src, tmp_path / "out.jsonl", "--fields", SEED_FIELDS)
    assert res.exit_code == 0, res.output
    for r in jsonl(tmp_path / "out.jsonl"):
        unit = r["realign"]["units"][0]
        assert (unit["task_type"], unit["task_source"]) == ("planning", "input")
        assert r["category"] == "planning"  # the column itself is untouched


# ---------------------------------------------------------------- not files, hf splits


def test_fifo_and_dev_null_are_not_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    for src in (fifo, Path("/dev/null")):
        for cmd in (
            ("run", src, "-o", tmp_path / "o.jsonl", "--backend", "fake"),
            ("convert", src, tmp_path / "o.jsonl"),
            ("stats", src),
        ):
            line = one_error_line(invoke(*cmd))
            assert line == f"error: {src}: not a regular file (a pipe or a device); pass a dataset file"


def test_missing_hf_split_names_the_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"instruction": ["q0", "q1"], "output": ["a0", "a1"]}
    dd = tmp_path / "dd"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    ).save_to_disk(str(dd))
    for spec in (f"{dd}:test", f"hf:{dd}:test"):
        line = one_error_line(invoke("convert", spec, tmp_path / "o.jsonl"))
        assert f"no split 'test'; {dd} has train, validation" in line
    single = tmp_path / "single"
    datasets.Dataset.from_dict(rows).save_to_disk(str(single))
    line = one_error_line(invoke("convert", f"{single}:train", tmp_path / "o.jsonl"))
    assert "holds one dataset, no splits" in line
    res = invoke("convert", f"hf:{dd}:validation", tmp_path / "o.jsonl")
    assert res.exit_code == 0 and len(jsonl(tmp_path / "o.jsonl")) == 2


def test_packed_values_come_back_exactly() -> None:
    """The run state's form of every value a Parquet row can hold, a user key like realign's
    own tag included."""
    import pandas as pd

    from realign.values import TAG, json_text, pack, unpack

    row = {
        "b": b"\x00\xff",
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        "ns": pd.Timestamp(1_700_000_000_123_456_789),
        "d": dt.date(2024, 1, 2),
        "t": dt.time(1, 2, 3),
        "td": dt.timedelta(days=-1, seconds=5),
        "tdns": pd.Timedelta(7, unit="ns"),
        "dec": Decimal("-1.50"),
        "map": [("k", 1), ("j", None)],
        "inf": -math.inf,
        "big": 10**40,
        "mine": {TAG: "bytes", "v": "not ours"},
        "plain": {"a": [1, "x", None]},
    }
    back = unpack(json.loads(json.dumps(pack(row), allow_nan=False)))
    assert back == row and type(back["ns"]) is pd.Timestamp
    plain = {"a": [1, {"b": "c"}]}
    assert pack(plain) is plain and unpack(plain) is plain  # nothing copied when nothing to do
    assert json_text({"d": Decimal("2.50"), "td": dt.timedelta(seconds=90)}) == (
        '{"d": "2.50", "td": "P0DT90S"}'
    )


@pytest.mark.parametrize("name", ["in.json", "in.json.gz", "in.jsonl.gz"])
def test_progress_total_of_json_and_compressed_inputs(tmp_path: Path, name: str) -> None:
    """The progress bar's late total counts the records of inputs with no cheap count: a .json
    array and compressed JSON Lines; a plain .jsonl is counted by its lines instead."""
    from realign.pipeline.build import count_json_records, count_records

    objs = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(7)]
    text = json.dumps(objs) if ".json." in name or name.endswith(".json") else ""
    if ".jsonl" in name:
        text = "".join(json.dumps(o) + "\n" for o in objs)
    raw = text.encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    assert count_records(path) is None
    assert count_json_records(path) == 7
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(o) + "\n" for o in objs))
    assert (count_records(plain), count_json_records(plain)) == (7, None)
