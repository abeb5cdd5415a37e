"""Dataset shapes: detection, parsing into records, writing back with every field kept."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from realign.io.detect import detect_format
from realign.io.emit import from_record
from realign.io.formats import FieldMap, FormatError, RecordError, to_record
from realign.records import Evidence, RealignMeta, UnitMeta, input_task_type

ITEMS = {
    "id": 7,
    "items": [
        {"from": "human", "value": "What is 2+2?", "category": "math_puzzles", "lang": "en"},
        {"from": "gpt", "value": "4", "weight": 1},
    ],
    "source": "mine",
    "tags": ["a", {"b": None}],
}
SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello!"},
        {"from": "human", "value": "Bye"},
        {"from": "gpt", "value": "Goodbye."},
    ],
    "id": "conv-1",
}
ALPACA = {"instruction": "Translate to French", "input": "cat", "output": "chat", "x": 1}
MESSAGES = {
    "messages": [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Tell"}, {"type": "text", "text": "me"}],
        },
        {"role": "assistant", "content": "Sure.", "name": "bot"},
    ],
    "meta": {"k": [1, 2]},
}
GSM = {"question": "1+1?", "answer": "2\n#### 2", "qid": 12}
GSM_FIELDS = FieldMap.parse("instruction=question,response=answer,id=qid")


def roundtrip(obj: dict[str, Any], fmt: str, fields: FieldMap | None = None) -> dict[str, Any]:
    rec = to_record(copy.deepcopy(obj), 3, fmt, fields)
    return from_record(rec, fmt, fields)


@pytest.mark.parametrize(
    ("obj", "fmt", "fields"),
    [
        (ITEMS, "items", None),
        (SHAREGPT, "sharegpt", None),
        (ALPACA, "alpaca", None),
        (MESSAGES, "messages", None),
        (GSM, "fields", GSM_FIELDS),
    ],
)
def test_own_format_round_trip_keeps_every_value_and_key_order(
    obj: dict[str, Any], fmt: str, fields: FieldMap | None
) -> None:
    out = roundtrip(obj, fmt, fields)
    assert out == obj
    assert json.dumps(out) == json.dumps(obj)  # same key order too


def test_items_record_shape_and_category_in_turn_extra() -> None:
    rec = to_record(ITEMS, 0, "items")
    assert rec.id == "7"
    assert [t.role for t in rec.turns] == ["user", "assistant"]
    assert rec.turns[0].extra == {"category": "math_puzzles", "lang": "en"}
    assert rec.raw == ITEMS
    assert input_task_type(rec, 1) == "math_puzzles"


def test_id_falls_back_to_index() -> None:
    rec = to_record({"items": []}, 42, "items")
    assert rec.id == "42"
    assert rec.turns == []


def test_sharegpt_system_and_multi_turn() -> None:
    rec = to_record(SHAREGPT, 0, "sharegpt")
    assert [t.role for t in rec.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert rec.assistant_turns() == [2, 4]
    assert rec.instruction_for(4) == "Bye"


def test_alpaca_joins_input_and_reads_history_and_system() -> None:
    obj = {
        "instruction": "Q2",
        "input": "ctx",
        "output": "A2",
        "system": "S",
        "history": [["Q1", "A1"]],
    }
    rec = to_record(obj, 0, "alpaca")
    assert [(t.role, t.content) for t in rec.turns] == [
        ("system", "S"),
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2\n\nctx"),
        ("assistant", "A2"),
    ]
    rec.turns[2].content = "A1 better"
    rec.turns[4].content = "A2 better"
    out = from_record(rec)
    assert out == {**obj, "output": "A2 better", "history": [["Q1", "A1 better"]]}
    assert obj["history"] == [["Q1", "A1"]]  # raw untouched: a deep copy was patched


def test_alpaca_empty_input_is_not_joined() -> None:
    rec = to_record({"instruction": "Q", "input": "", "output": "A"}, 0, "alpaca")
    assert rec.turns[0].content == "Q"


def test_alpaca_user_turn_patch_keeps_input_when_possible() -> None:
    rec = to_record(ALPACA, 0, "alpaca")
    rec.turns[0].content = "Translate into French\n\ncat"
    assert from_record(rec)["instruction"] == "Translate into French"
    rec.turns[0].content = "Something else"
    out = from_record(rec)
    assert (out["instruction"], out["input"]) == ("Something else", "")


def test_messages_text_parts_are_joined_and_patch_replaces_content() -> None:
    rec = to_record(MESSAGES, 0, "messages")
    assert rec.turns[0].content == "Tell\nme"
    assert rec.turns[1].extra == {"name": "bot"}
    rec.turns[1].content = "Of course."
    out = from_record(rec)
    assert out["messages"][1] == {"role": "assistant", "content": "Of course.", "name": "bot"}
    assert out["messages"][0] == MESSAGES["messages"][0]
    assert out["meta"] == {"k": [1, 2]}


def test_fields_mapping_with_numbers_and_id() -> None:
    rec = to_record(
        {"q": "How many?", "a": 3, "n": "x1"},
        0,
        "fields",
        FieldMap.parse("instruction=q,response=a,id=n"),
    )
    assert rec.id == "x1"
    assert rec.response == "3"
    out = from_record(rec, fields=FieldMap.parse("instruction=q,response=a,id=n"))
    assert out["a"] == 3  # unchanged turns keep their original value and type


def test_patch_writes_changed_response_and_meta_only() -> None:
    rec = to_record(copy.deepcopy(ITEMS), 0, "items")
    rec.turns[1].content = "2 + 2 = 4."
    rec.meta = RealignMeta(
        task_type="math_puzzles",
        status="rewritten",
        units=[UnitMeta(turn=1, task_type="math_puzzles", status="rewritten", original="4")],
    )
    out = from_record(rec)
    assert out["items"][1] == {"from": "gpt", "value": "2 + 2 = 4.", "weight": 1}
    assert out["items"][0] == ITEMS["items"][0]
    assert out["source"] == "mine" and out["tags"] == ["a", {"b": None}]
    assert out["realign"] == {
        "task_type": "math_puzzles",
        "status": "rewritten",
        "units": [{"turn": 1, "task_type": "math_puzzles", "status": "rewritten", "original": "4"}],
    }
    # reading the output back gives the same metadata
    assert to_record(out, 0, "items").meta == rec.meta
    assert rec.raw == ITEMS  # the input object is never modified


def test_empty_meta_adds_no_key() -> None:
    assert "realign" not in roundtrip(ITEMS, "items")
    rec = to_record(ITEMS, 0, "items")
    assert "realign" not in from_record(rec, "sharegpt")


def test_cross_format_carries_unknown_fields_and_category() -> None:
    rec = to_record(ITEMS, 0, "items")
    sg = from_record(rec, "sharegpt")
    assert list(sg) == ["id", "conversations", "source", "tags"]  # the conversation stays in place
    assert sg["conversations"][0]["category"] == "math_puzzles"
    back = from_record(to_record(sg, 0, "sharegpt"), "items")
    assert back == ITEMS
    msgs = from_record(rec, "messages")
    assert msgs["messages"][0] == {"role": "user", "content": "What is 2+2?"}
    assert msgs["category"] == "math_puzzles"
    alp = from_record(rec, "alpaca")
    assert alp == {
        "id": 7,
        "instruction": "What is 2+2?",
        "input": "",
        "output": "4",
        "source": "mine",
        "tags": ["a", {"b": None}],
        "category": "math_puzzles",
    }
    assert input_task_type(to_record(alp, 0, "alpaca"), 1) == "math_puzzles"


def test_multi_turn_to_alpaca_uses_history_and_to_fields_is_an_error() -> None:
    rec = to_record(SHAREGPT, 0, "sharegpt")
    alp = from_record(rec, "alpaca")
    assert alp["system"] == "Be brief."
    assert alp["history"] == [["Hi", "Hello!"]]
    assert (alp["instruction"], alp["output"]) == ("Bye", "Goodbye.")
    with pytest.raises(RecordError, match="one instruction and one response"):
        from_record(rec, "fields", FieldMap.parse("instruction=q,response=a,system=s"))


def test_fields_output_needs_mapping() -> None:
    with pytest.raises(FormatError, match="--output-fields"):
        from_record(to_record(ITEMS, 0, "items"), "fields")


def test_record_without_assistant_or_with_empty_response_is_readable() -> None:
    rec = to_record({"conversations": [{"from": "human", "value": "Hi"}]}, 0, "sharegpt")
    assert rec.assistant_turns() == [] and rec.response == ""
    rec = to_record({"instruction": "Q", "output": ""}, 0, "alpaca")
    assert rec.response == ""
    with pytest.raises(RecordError, match="user/assistant pairs"):
        from_record(to_record({"items": [{"from": "human", "value": "Hi"}]}, 0, "items"), "alpaca")


@pytest.mark.parametrize(
    ("obj", "fmt", "fields", "field"),
    [
        ({"instruction": "Q", "input": ""}, "alpaca", None, "output"),
        ({"question": "Q"}, "fields", GSM_FIELDS, "answer"),
        (
            {"items": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": 4}]},
            "items",
            None,
            "items[1].value",
        ),
        ({"items": [{"from": "robot", "value": "Q"}]}, "items", None, "items[0].from"),
        ({"items": [{"from": "human"}]}, "items", None, "items[0].value"),
        ({"items": "oops"}, "items", None, "items"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages",
            None,
            "messages[0].content[0]",
        ),
        (
            {"conversations": [{"from": "human", "value": "Q"}], "realign": {"status": "great"}},
            "sharegpt",
            None,
            "realign.status",
        ),
    ],
)
def test_bad_records_name_the_field(
    obj: dict[str, Any], fmt: str, fields: FieldMap | None, field: str
) -> None:
    with pytest.raises(RecordError) as exc:
        to_record(obj, 0, fmt, fields)
    assert exc.value.field == field


def test_not_an_object() -> None:
    with pytest.raises(RecordError, match="expected a JSON object, got array"):
        to_record([1], 0, "items")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obj", "fmt"),
    [(ITEMS, "items"), (SHAREGPT, "sharegpt"), (ALPACA, "alpaca"), (MESSAGES, "messages")],
)
def test_detect(obj: dict[str, Any], fmt: str) -> None:
    assert detect_format([obj, obj]) == fmt


def test_detect_ambiguous_in_one_record() -> None:
    both = {"items": [], "conversations": []}
    with pytest.raises(FormatError, match=r"ambiguous.*--input-format items\|sharegpt"):
        detect_format([both])


def test_detect_ambiguous_across_records() -> None:
    with pytest.raises(FormatError, match=r"alpaca \(2 records\), messages \(1 records\)"):
        detect_format([ALPACA, ALPACA, MESSAGES])


def test_detect_unknown_lists_keys_and_suggests_fields() -> None:
    with pytest.raises(FormatError) as exc:
        detect_format([GSM, GSM])
    msg = str(exc.value)
    assert "question (2)" in msg and "answer (2)" in msg
    assert "--fields instruction=question,response=answer" in msg


def test_input_task_type_top_level_and_none() -> None:
    rec = to_record({"instruction": "Q", "output": "A", "task_type": "open_qa"}, 0, "alpaca")
    assert input_task_type(rec, 1) == "open_qa"
    rec = to_record(SHAREGPT, 0, "sharegpt")
    assert input_task_type(rec, 4) is None


def test_input_task_type_uses_the_preceding_user_turn() -> None:
    obj = {
        "items": [
            {"from": "human", "value": "a", "category": "open_qa"},
            {"from": "gpt", "value": "b"},
            {"from": "human", "value": "c", "category": "planning"},
            {"from": "gpt", "value": "d"},
        ]
    }
    rec = to_record(obj, 0, "items")
    assert (input_task_type(rec, 1), input_task_type(rec, 3)) == ("open_qa", "planning")


def test_evidence_meta_survives_cross_format() -> None:
    rec = to_record(ITEMS, 0, "items")
    rec.meta.units = [UnitMeta(turn=1, evidence=[Evidence(snippet="s", url="https://x.org/a")])]
    out = from_record(rec, "messages")
    assert out["realign"]["units"][0]["evidence"][0]["url"] == "https://x.org/a"
    assert list(out)[-1] == "realign"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("instruction=q", "response missing"),
        ("instruction=q,response", "not NAME=KEY"),
        ("instruction=q,response=a,foo=b", "unknown name 'foo'"),
    ],
)
def test_field_map_errors(spec: str, error: str) -> None:
    with pytest.raises(FormatError, match=error):
        FieldMap.parse(spec)


def test_field_map_spec_round_trip() -> None:
    spec = "instruction=q,response=a,system=s,id=n"
    assert FieldMap.parse(spec).spec() == spec
