"""Streaming readers and writers: round trips per file type, and bad input that names its place."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from realign.io.errors import ReadError, RecordWriteError
from realign.io.formats import FieldMap, FormatError
from realign.io.read import read_objects, read_records
from realign.io.write import RecordWriter
from realign.records import Evidence, Record, UnitMeta

NQ_LIKE: list[dict[str, Any]] = [
    {
        "items": [
            {"from": "human", "value": "who wrote the novel moby dick?"},
            {"from": "gpt", "value": "Herman Melville"},
        ],
        "id": 0,
    },
    {
        "items": [
            {"from": "human", "value": "when did the berlin wall fall?", "category": "open_qa"},
            {"from": "gpt", "value": "9 November 1989\n1989"},
        ],
        "id": 1,
    },
    {
        "items": [
            {"from": "human", "value": "what is the capital of australia?"},
            {"from": "gpt", "value": "Canberra"},
            {"from": "human", "value": "and its population?"},
            {"from": "gpt", "value": "about 470,000 — «approx.»"},
        ],
        "id": 2,
        "extra": {"nested": [{"a": 1}, {"a": 2, "b": "x"}]},
    },
]


def write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def records(path: Path | str, **kw: Any) -> list[Record | ReadError]:
    return list(read_records(path, **kw))


def ok(items: list[Record | ReadError]) -> list[Record]:
    assert all(isinstance(r, Record) for r in items), [str(r) for r in items]
    return items  # type: ignore[return-value]


def errors(items: list[Record | ReadError]) -> list[ReadError]:
    return [r for r in items if isinstance(r, ReadError)]


def convert(src: Path, dst: Path, fmt: str | None = None, **kw: Any) -> None:
    with RecordWriter(dst, fmt, **kw) as w:
        for r in ok(records(src)):
            w.write(r)
    assert w.take_rejected() == []


@pytest.mark.parametrize("ext", [".json", ".jsonl", ".parquet"])
def test_round_trip_each_file_type(tmp_path: Path, ext: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", NQ_LIKE)
    out = tmp_path / f"out{ext}"
    convert(src, out)
    back = ok(records(out))
    assert [r.raw for r in back] == NQ_LIKE
    assert [r.id for r in back] == ["0", "1", "2"]
    assert back[1].turns[0].extra == {"category": "open_qa"}
    assert not list(tmp_path.glob(".*.partial"))


def test_chain_items_jsonl_parquet_sharegpt_items_is_identical(tmp_path: Path) -> None:
    src = tmp_path / "nq.json"
    src.write_text(json.dumps(NQ_LIKE, indent=4, ensure_ascii=False), encoding="utf-8")
    convert(src, tmp_path / "a.jsonl")
    convert(tmp_path / "a.jsonl", tmp_path / "b.parquet")
    convert(tmp_path / "b.parquet", tmp_path / "c.json", "sharegpt")
    assert "conversations" in json.loads((tmp_path / "c.json").read_text())[0]
    convert(tmp_path / "c.json", tmp_path / "d.json", "items")
    assert json.loads((tmp_path / "d.json").read_text(encoding="utf-8")) == NQ_LIKE


def test_gsm8k_like_through_fields(tmp_path: Path) -> None:
    rows = [
        {"question": "Tom has 3 apples and buys 2 more. How many?", "answer": "3 + 2 = 5\n#### 5"},
        {"question": "Half of 8?", "answer": "8 / 2 = 4\n#### 4"},
    ]
    src = write_jsonl(tmp_path / "gsm.jsonl", rows)
    reader = read_records(src, fields="instruction=question,response=answer")
    recs = ok(list(reader))
    assert reader.format == "fields"
    assert recs[0].instruction.startswith("Tom has") and recs[0].response.endswith("#### 5")
    fields = FieldMap.parse("instruction=question,response=answer")
    with RecordWriter(tmp_path / "gsm.parquet", fields=fields) as w:
        for r in recs:
            w.write(r)
    back = ok(records(tmp_path / "gsm.parquet", fields=fields))
    assert [r.raw for r in back] == rows


def test_parquet_keeps_nested_structs_and_realign_json(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", NQ_LIKE)
    recs = ok(records(src))
    recs[0].turns[1].content = "Herman Melville wrote Moby-Dick (1851)."
    recs[0].meta.status = "rewritten"
    recs[0].meta.units = [
        UnitMeta(turn=1, status="rewritten", evidence=[Evidence(snippet="s", url="https://a.org")])
    ]
    recs[1].meta.scores = {}  # a different shape per record must not clash in Parquet
    recs[1].meta.model_extra["anything"] = {"free": ["form"]}  # type: ignore[index]
    out = tmp_path / "out.parquet"
    with RecordWriter(out, parquet_batch_rows=2) as w:
        for r in recs:
            w.write(r)
    assert w.take_rejected() == [] and w.written == 3
    assert pq.ParquetFile(out).metadata.num_row_groups == 2  # written in batches
    back = ok(records(out))
    assert back[0].response == "Herman Melville wrote Moby-Dick (1851)."
    assert back[0].meta.units[0].evidence[0].url == "https://a.org"
    assert back[1].raw["realign"] == {"anything": {"free": ["form"]}}
    assert back[2].raw["extra"] == NQ_LIKE[2]["extra"]


def test_parquet_grows_its_schema_and_rejects_type_clashes(tmp_path: Path) -> None:
    objs = [
        {"instruction": "a", "output": "b", "n": 1},
        {"instruction": "c", "output": "d", "n": 2},
        {"instruction": "e", "output": "f", "n": "three"},  # clashes with the numbers
        {"instruction": "g", "output": "h", "new": {"deep": [1, 2]}},  # a late key is fine
        {"instruction": "i", "output": "j", "n": 5, "e": {}},  # Parquet has no empty struct
        {"instruction": "k", "output": "l", "n": 2.5},  # ints and floats share a column
    ]
    src = write_jsonl(tmp_path / "in.jsonl", objs)
    with RecordWriter(tmp_path / "out.parquet", parquet_batch_rows=2) as w:
        for r in ok(records(src)):
            w.write(r)
    rejected = w.take_rejected()
    assert [(e.index, e.field) for e in rejected] == [(2, "n"), (4, "e")]
    assert "incompatible types" in rejected[0].message
    assert str(rejected[1]).startswith(f"{tmp_path / 'out.parquet'} record 4 (id 4): e: ")
    assert w.written == 4
    back = [r.raw for r in ok(records(tmp_path / "out.parquet"))]
    assert back == [objs[0], objs[1], objs[3], objs[5]]
    assert not list(tmp_path.glob(".*"))  # spool and partial files are gone


def test_parquet_first_batch_with_mixed_types_rejects_the_clash(tmp_path: Path) -> None:
    objs = [
        {"instruction": "a", "output": "b", "id": 1},
        {"instruction": "c", "output": "d", "id": "x"},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", objs)
    with RecordWriter(tmp_path / "out.parquet") as w:
        for r in ok(records(src)):
            w.write(r)
    rejected = w.take_rejected()
    assert [e.id for e in rejected] == ["x"]
    assert w.written == 1


def test_empty_output_files_read_back_empty(tmp_path: Path) -> None:
    for ext in (".json", ".jsonl", ".parquet"):
        with RecordWriter(tmp_path / f"e{ext}", "items"):
            pass
    assert records(tmp_path / "e.json") == []
    assert records(tmp_path / "e.parquet") == []
    assert (tmp_path / "e.jsonl").read_text() == ""


def test_writer_aborts_on_exception(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), RecordWriter(out):
        raise RuntimeError("boom")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_writer_rejects_what_the_format_cannot_hold(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", NQ_LIKE)
    with RecordWriter(tmp_path / "o.jsonl", "fields", fields="instruction=q,response=a") as w:
        for r in ok(records(src)):
            if r.id == "2":
                with pytest.raises(RecordWriteError) as exc:
                    w.write(r)
                assert exc.value.error.id == "2"
                assert "one instruction and one response" in exc.value.error.message
            else:
                w.write(r)
    assert w.written == 2


# ---------------------------------------------------------------- bad input


def test_jsonl_bad_lines_are_named_and_others_go_on(tmp_path: Path) -> None:
    good = json.dumps(NQ_LIKE[0])
    src = tmp_path / "bad.jsonl"
    src.write_bytes(
        b"\n".join(
            [
                good.encode(),
                b'{"items": [',  # malformed
                b"[1, 2]",  # wrong type
                b"",  # blank lines are skipped
                json.dumps({"id": 9, "items": [{"from": "gpt", "value": 5}]}).encode(),
                b'{"id": 10, "items": [{"from": "human", "value": "caf\xe9"}]}',  # Latin-1 byte
                good.encode(),
            ]
        )
        + b"\n"
    )
    out = records(src)
    assert [r.id for r in out if isinstance(r, Record)] == ["0", "0"]
    errs = errors(out)
    assert [(e.line, e.index) for e in errs] == [(2, 1), (3, 2), (5, 3), (6, 4)]
    assert "malformed JSON" in errs[0].message and errs[0].text == '{"items": ['
    assert "expected a JSON object, got array" in errs[1].message
    assert (errs[2].id, errs[2].field) == ("9", "items[0].value")
    assert (errs[3].id, errs[3].field) == ("10", "items[0].value")
    assert "not valid UTF-8" in errs[3].message
    assert str(errs[2]).startswith(f"{src}:5 (id 9): items[0].value: expected a string")


@pytest.mark.parametrize("ext", [".json", ".jsonl"])
@pytest.mark.parametrize("content", [b"", b"  \n\n "])
def test_empty_file_is_an_error(tmp_path: Path, ext: str, content: bytes) -> None:
    src = tmp_path / f"empty{ext}"
    src.write_bytes(content)
    (err,) = records(src)
    assert isinstance(err, ReadError) and "empty" in err.message and err.file == str(src)


def test_empty_json_array_has_no_records(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text("[ ]")
    assert records(tmp_path / "e.json") == []


def test_utf16_file_is_named(tmp_path: Path) -> None:
    src = tmp_path / "u16.jsonl"
    src.write_bytes(json.dumps(NQ_LIKE[0]).encode("utf-16"))
    (err,) = records(src)
    assert isinstance(err, ReadError) and "UTF-16" in err.message


@pytest.mark.parametrize("ext", [".json", ".jsonl"])
def test_ten_megabyte_record_is_rejected_with_its_field(tmp_path: Path, ext: str) -> None:
    big = {
        "id": "big",
        "items": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "x" * 10_000_000}],
    }
    objs = [NQ_LIKE[0], big, NQ_LIKE[1]]
    src = tmp_path / f"big{ext}"
    if ext == ".json":
        src.write_text(json.dumps(objs, indent=1))
    else:
        write_jsonl(src, objs)
    out = records(src)
    assert [r.id for r in out if isinstance(r, Record)] == ["0", "1"]
    (err,) = errors(out)
    assert (err.id, err.index, err.field) == ("big", 1, "items[1].value")
    assert "10.0 MB" in err.message and "--max-record-mb" in err.message
    # the limit is configurable
    assert len(ok(records(src, max_record_bytes=20_000_000))) == 3


def test_default_record_limit_is_the_4_mb_it_names(tmp_path: Path) -> None:
    """--max-record-mb counts decimal MB; the default limit is shown as what it is."""
    src = write_jsonl(tmp_path / "big.jsonl", [{"id": "b", "items": [], "x": "x" * 4_100_000}])
    (err,) = errors(records(src))
    assert "record is 4.1 MB, over the 4.0 MB limit" in err.message
    src = write_jsonl(tmp_path / "small.jsonl", [{"id": "s", "items": [], "x": "x" * 30_000}])
    (err,) = errors(records(src, max_record_bytes=20_000))
    assert "record is 30.0 kB, over the 20.0 kB limit" in err.message and err.record


def test_json_array_is_streamed_with_line_numbers_across_chunks(tmp_path: Path) -> None:
    objs = [
        {
            "id": i,
            # multi-byte characters and escapes land on chunk boundaries somewhere
            "items": [
                {"from": "human", "value": 'é"\\☃\n' * (i * 2500)},
                {"from": "gpt", "value": "a"},
            ],
        }
        for i in range(30)
    ]
    src = tmp_path / "many.json"
    src.write_text(json.dumps(objs, indent=2, ensure_ascii=False), encoding="utf-8")
    stream = read_objects(src)
    got = list(stream)
    assert [o for _, _, o in got] == objs
    text = src.read_text().splitlines()
    for _, line, _obj in got:
        assert line is not None and text[line - 1].strip() == "{"
    assert stream.progress() == (src.stat().st_size, src.stat().st_size)


def test_json_syntax_error_is_one_record_and_reading_goes_on(tmp_path: Path) -> None:
    src = tmp_path / "broken.json"
    src.write_text('[\n{"items": [], "id": 1},\n{"items": [}, \n{"items": []}\n]')
    out = records(src, input_format="items")
    assert [r.id for r in out if isinstance(r, Record)] == ["1", "2"]
    (err,) = errors(out)
    assert (err.line, err.index) == (3, 1) and "goes on with the next record" in err.message
    assert err.text == '{"items": [}'


@pytest.mark.parametrize(
    "broken",
    [
        '{"id": "b", "items": [{"from": "human" "value": "x"}]}',  # missing comma
        '{"id": "b", "items": [{"from": "human", "value": "x",}]}',  # trailing comma
        "{'id': 'b', 'items': []}",  # single quotes
        '{"id": "b", "items": [{"from": "human", "value": "open]}',  # unterminated string
        '{"id": "b", "items": [{"from": "human", "value": "x"}]',  # a brace missing
        '{"id": "b", "items": [{"from": "human", "value": "x"}}]}',  # a bracket too many
        '{"id": "b", "items": [{"from": "human", "value": "a \\q"}]}',  # bad escape
        "nonsense",  # a bare word
    ],
)
@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_recovers_at_the_next_record(
    tmp_path: Path, broken: str, indent: int | None
) -> None:
    good = [{"id": f"g{i}", "items": [{"from": "human", "value": "[{,]}"}]} for i in range(3)]
    parts = [json.dumps(o, indent=indent) for o in good]
    src = tmp_path / "broken.json"
    src.write_text("[\n" + ",\n".join([parts[0], broken, parts[1], parts[2]]) + "\n]\n")
    out = records(src, input_format="items")
    assert [r.id for r in out if isinstance(r, Record)] == ["g0", "g1", "g2"]
    (err,) = errors(out)
    assert err.index == 1 and "malformed JSON" in err.message and err.text


@pytest.mark.parametrize("indent", [None, 1])
def test_json_array_recovers_after_a_broken_record_longer_than_a_read(
    tmp_path: Path, indent: int | None
) -> None:
    """The record's start column survives the reader's window moving (64 KB reads)."""
    objs = [
        {"id": f"g{i}", "items": [{"from": "human", "value": "é[{," * 40_000}]} for i in range(4)
    ]
    parts = [json.dumps(o, indent=indent, ensure_ascii=False) for o in objs]
    parts[1] = parts[1][:-1]  # its closing brace is lost
    src = tmp_path / "big.json"
    src.write_text("[\n" + ",\n".join(parts) + "\n]\n", encoding="utf-8")
    out = records(src, input_format="items")
    assert [r.id for r in out if isinstance(r, Record)] == ["g0", "g2", "g3"]
    (err,) = errors(out)
    assert err.index == 1 and "goes on with the next record" in err.message


def test_truncated_json_array_names_the_cut_record(tmp_path: Path) -> None:
    objs = [{"id": i, "items": []} for i in range(3)]
    src = tmp_path / "cut.json"
    src.write_text(json.dumps(objs)[:-8])
    out = records(src, input_format="items")
    assert [r.id for r in out if isinstance(r, Record)] == ["0", "1"]
    (err,) = errors(out)
    assert err.index == 2 and "could not be read" in err.message


def test_json_array_non_utf8_record_is_named_and_others_go_on(tmp_path: Path) -> None:
    src = tmp_path / "latin.json"
    src.write_bytes(
        b'[{"id": 1, "items": [{"from": "human", "value": "caf\xe9"}]},\n {"id": 2, "items": []}]'
    )
    out = records(src)
    (err,) = errors(out)
    assert (err.id, err.line, err.field) == ("1", 1, "items[0].value")
    assert [r.id for r in out if isinstance(r, Record)] == ["2"]


def test_json_file_of_concatenated_objects_is_read(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "actually_lines.json", NQ_LIKE)
    assert [r.raw for r in ok(records(src))] == NQ_LIKE


def test_json_not_an_array(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('"hello"')
    (err,) = records(tmp_path / "s.json")
    assert isinstance(err, ReadError) and "expected a JSON array" in err.message


def test_detection_errors_name_the_file(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(
        FormatError, match=r"gsm\.jsonl: unknown format.*--fields instruction=question"
    ):
        read_records(src).format  # noqa: B018
    with pytest.raises(FormatError, match="--fields only applies"):
        read_records(src, "items", "instruction=question,response=answer")
    with pytest.raises(FormatError, match=r"unknown file type '\.csv'"):
        read_records(write_jsonl(tmp_path / "x.csv", []))
    with pytest.raises(FormatError, match="no such file"):
        read_records(tmp_path / "missing.jsonl")


def test_all_bad_input_still_yields_each_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text("nope\n[]\n")
    out = records(src)
    assert [e.line for e in errors(out)] == [1, 2] and len(out) == 2


def test_bad_records_after_detection_are_errors_with_ids(tmp_path: Path) -> None:
    rows = [*NQ_LIKE, {"id": "z", "instruction": "q", "output": "a"}]
    out = records(write_jsonl(tmp_path / "mix.jsonl", rows), input_format="items")
    (err,) = errors(out)
    assert (err.id, err.field, err.line) == ("z", "items", 4)
    assert err.record == rows[-1]


def test_hf_dataset_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [
        {"question": "q1", "answer": "a1", "note": None},
        {"question": "q2", "answer": "a2", "note": "n"},
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    recs = ok(records(tmp_path / "ds", fields="instruction=question,response=answer"))
    assert [r.raw for r in recs] == [{"question": "q1", "answer": "a1"}, rows[1]]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(NQ_LIKE[:2]),
            "test": datasets.Dataset.from_list(NQ_LIKE[:1]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [r.id for r in ok(records(tmp_path / "dd"))] == ["0", "1"]  # train by default
    assert [r.id for r in ok(records(f"{tmp_path / 'dd'}:test"))] == ["0"]


def test_hf_without_datasets_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(FormatError, match=r"pip install 'realign\[hf\]'"):
        read_records("hf:someone/some-dataset:train")
