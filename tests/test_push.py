"""`realign push` against a local fake of the Hub's HTTP API (tests/fake_hub.py): the files,
the card's YAML and counts, `--card-only`, `--private`, `--overwrite` and the error exits."""

from __future__ import annotations

import io
import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pyarrow.parquet as pq
import pytest
import yaml
from fake_hub import HubState, handler_for
from local_http import serving
from typer.testing import CliRunner

from realign.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN = "hf_test_token"
pytestmark = pytest.mark.block_network(allowed_hosts=["127.0.0.1"])  # the fake Hub only
runner = CliRunner()


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `realign run` output (fake backend), with a failures file of two records."""
    folder = tmp_path_factory.mktemp("run")
    out = folder / "out.jsonl"
    res = runner.invoke(
        app,
        ["run", str(EXAMPLES / "realign_items.json"), "-o", str(out), "--backend", "fake"],
        env={"REALIGN_HOME": str(folder / "home")},
    )
    assert res.exit_code in (0, 1), res.output
    failures = [
        {
            "id": "f1",
            "index": 90,
            "stage": "rewrite",
            "error": "x",
            "record": {"category": "open_qa"},
        },
        {"id": "f2", "index": 91, "stage": "load", "error": "bad json", "record": {}},
    ]
    (folder / "out.failures.jsonl").write_text("".join(json.dumps(f) + "\n" for f in failures))
    return out


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    state = HubState(token=TOKEN)
    # No saved login may leak in: the token comes from HF_TOKEN only (or not at all).
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with serving(handler_for(state)) as url:
        monkeypatch.setenv("HF_ENDPOINT", url.rstrip("/"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield state


def push(*args: str) -> Any:
    return runner.invoke(app, ["push", *args])


def card_of(state: HubState, repo: str) -> tuple[dict[str, Any], str]:
    text = state.repos[repo].files["README.md"].decode()
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def table_row(body: str, task: str) -> list[int]:
    """The counts (rewritten, kept, skipped, failed, total) of one task type's card row."""
    label = "**all**" if task == "all" else f"`{task}`"
    (line,) = [x for x in body.splitlines() if x.startswith(f"| {label} |")]
    return [int(c) for c in line.strip("|").split("|")[1:]]


def test_push_uploads_sharded_parquet_and_a_card(
    hub: HubState, run_output: Path, tmp_path: Path
) -> None:
    judge = tmp_path / "cmp.json"
    rate = {"rate": 0.6, "low": 0.5, "high": 0.7}
    overall = {"n": 10, "win": rate, "tie": {"rate": 0.1, "low": 0, "high": 0.2}, "lose": rate}
    judge.write_text(json.dumps({
        "kind": "comparison", "a": "orig.json", "b": "out.jsonl", "model": "judge-model",
        "aspects": ["alignment"], "summary": {"alignment": {"overall": overall}},
    }))  # fmt: skip
    res = push(
        str(run_output), "--repo", "org/data", "--license", "cc-by-4.0",
        "--max-shard-mb", "0.002", "--judge", str(judge),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    repo = hub.repos["org/data"]
    assert not repo.private and repo.commits == 1  # every file in one commit
    shards = sorted(f for f in repo.files if f.startswith("data/"))
    n = len(shards)
    assert n > 1 and shards == [f"data/train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]
    rows = [r for s in shards for r in pq.read_table(io.BytesIO(repo.files[s])).to_pylist()]
    written = records(run_output)
    assert [r["id"] for r in rows] == [r["id"] for r in written]
    assert json.loads(rows[0]["realign"])["status"] == written[0]["realign"]["status"]

    header, body = card_of(hub, "org/data")
    assert header["license"] == "cc-by-4.0"
    assert header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["text-generation"]
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    # Counts per task type: the output's `realign` keys, plus the failures file.
    counts: dict[str, Counter[str]] = {}
    for r in written:
        counts.setdefault(r["realign"]["task_type"] or "unknown", Counter())[
            r["realign"]["status"]
        ] += 1
    for task, c in counts.items():
        failed = 1 if task == "open_qa" else 0
        want = [c["rewritten"], c["kept"], c["skipped"], failed]
        assert table_row(body, task) == [*want, sum(want)]
    total = table_row(body, "all")
    assert total[4] == len(written) + 2 and total[3] == 2
    assert "load 1" in body and "rewrite 1" in body
    prov = written[0]["realign"]["provenance"]
    assert f"`{prov['criteria_pack']}` (hash `{prov['pack_hash']}`)" in body
    assert "`fake-model`" in body
    assert prov["command"].startswith("realign run ") and prov["command"] in body
    assert "| alignment | 10 | 60.0% (50.0%–70.0%) | n/a |" in body  # no length-controlled rate


def test_card_shows_length_controlled_rates_and_ratings(
    hub: HubState, run_output: Path, tmp_path: Path
) -> None:
    rate = {"rate": 0.6, "low": 0.5, "high": 0.7}
    lc = {"rate": 0.52, "low": 0.41, "high": 0.63, "length_weight": 1.4, "n": 10}
    summary = {"overall": {"n": 10, "win": rate, "tie": rate, "lose": rate}}
    pair = tmp_path / "cmp.json"
    pair.write_text(json.dumps({
        "kind": "comparison", "a": "orig.json", "b": "out.jsonl", "model": "judge-model",
        "aspects": ["readability"],
        "summary": {"readability": {**summary, "length_controlled": lc}},
    }))  # fmt: skip
    assert push(str(run_output), "--repo", "org/lc", "--judge", str(pair)).exit_code == 0
    _, body = card_of(hub, "org/lc")
    assert "| readability | 10 | 60.0% (50.0%–70.0%) | 52.0% (41.0%–63.0%) |" in body

    many = tmp_path / "ratings.json"
    ratings = [
        {"name": "v2.json", "rating": 1080.4, "low": 1040.2, "high": 1121.9, "games": 40,
         "score": 26.0},
        {"name": "orig.json", "rating": 919.6, "low": 880.0, "high": 960.1, "games": 40,
         "score": 14.0},
    ]
    many.write_text(json.dumps({
        "kind": "multi_comparison", "datasets": ["orig.json", "v2.json"], "model": "judge-model",
        "aspects": ["alignment"], "ratings": {"alignment": ratings},
    }))  # fmt: skip
    res = push(str(run_output), "--repo", "org/bt", "--judge", str(many))
    assert res.exit_code == 0, res.output
    _, body = card_of(hub, "org/bt")
    assert "Bradley–Terry ratings by `judge-model` of 2 datasets" in body
    assert "| alignment | `v2.json` | 1080 | 1040–1122 | 40 |" in body


def test_private_and_card_only(hub: HubState, run_output: Path) -> None:
    assert push(str(run_output), "--repo", "org/p", "--private").exit_code == 0
    repo = hub.repos["org/p"]
    assert repo.private
    data_before = {k: v for k, v in repo.files.items() if k != "README.md"}
    header, _ = card_of(hub, "org/p")
    assert header["license"] == "unknown"  # none given, none in the records

    res = push(str(run_output), "--repo", "org/p", "--card-only", "--license", "mit")
    assert res.exit_code == 0, res.output
    assert repo.commits == 2
    assert {k: v for k, v in repo.files.items() if k != "README.md"} == data_before
    header, _ = card_of(hub, "org/p")
    assert header["license"] == "mit"
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]


def test_overwrite_replaces_the_split_and_keeps_other_splits(
    hub: HubState, run_output: Path
) -> None:
    assert push(str(run_output), "--repo", "org/o", "--max-shard-mb", "0.002").exit_code == 0
    repo = hub.repos["org/o"]
    before = dict(repo.files)

    res = push(str(run_output), "--repo", "org/o")
    one_error(res, "exists", "--overwrite")
    assert repo.files == before and repo.commits == 1

    res = push(str(run_output), "--repo", "org/o", "--overwrite", "--split", "test")
    assert res.exit_code == 0, res.output
    res = push(str(run_output), "--repo", "org/o", "--overwrite")  # one big shard now
    assert res.exit_code == 0, res.output
    assert "deleted" in res.output
    train = sorted(f for f in repo.files if f.startswith("data/train-"))
    assert train == ["data/train-00000-of-00001.parquet"]
    assert "data/test-00000-of-00001.parquet" in repo.files
    header, _ = card_of(hub, "org/o")
    assert header["configs"][0]["data_files"] == [
        {"split": "test", "path": "data/test-*"},
        {"split": "train", "path": "data/train-*"},
    ]


def one_error(res: Any, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    *progress, last = res.output.splitlines()  # "uploading …" may come first
    assert last.startswith("error: ") and not any("error" in p for p in progress), res.output
    for n in needles:
        assert n in last, res.output


def test_no_token(hub: HubState, run_output: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    one_error(push(str(run_output), "--repo", "org/x"), "no Hugging Face token", "HF_TOKEN")
    assert hub.requests == []


def test_not_a_realign_output(hub: HubState) -> None:
    one_error(
        push(str(EXAMPLES / "realign_items.json"), "--repo", "org/x"),
        "no `realign` key",
        "not a `realign run` output",
    )
    assert hub.requests == []


def test_card_only_needs_the_repo(hub: HubState, run_output: Path) -> None:
    one_error(push(str(run_output), "--repo", "org/none", "--card-only"), "does not exist")
    assert "org/none" not in hub.repos


def test_network_down(run_output: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    one_error(push(str(run_output), "--repo", "org/x"), "cannot reach the Hub")


def test_failed_commit_says_what_was_left(hub: HubState, run_output: Path) -> None:
    hub.fail_commit = True
    one_error(push(str(run_output), "--repo", "org/f"), "the repository was created but is empty")
    assert hub.repos["org/f"].files == {}


def test_bad_repo_id(hub: HubState, run_output: Path) -> None:
    one_error(push(str(run_output), "--repo", "just-a-name"), "ORG/NAME")


def test_card_of_an_older_output_says_the_command_was_not_recorded() -> None:
    from realign.hub.card import CardFacts, render_card

    facts = CardFacts()
    for i in range(3):
        meta = {
            "task_type": "open_qa",
            "status": "rewritten",
            "units": [{"filter": {"preset": "math"}}],
            "provenance": {"model": "m1", "criteria_pack": "realign"},
        }
        facts.add({"id": str(i), "license": "cc-by-sa-4.0", "realign": meta})  # fmt: skip
    assert facts.license() == "cc-by-sa-4.0"  # every record carries the same one
    card = render_card(
        facts, repo="o/n", license="cc-by-sa-4.0", license_source="records", split="train",
        splits={"train": ["data/train-00000-of-00001.parquet"]}, judge=None,
    )  # fmt: skip
    assert "command line was not recorded" in card
    assert "realign run INPUT -o OUTPUT --pack realign --model m1 --filter-preset math" in card
    assert "pack hash not recorded" in card
    assert table_row(card, "open_qa") == [3, 0, 0, 0, 3]


def test_records_that_disagree_on_license_give_none() -> None:
    from realign.hub.card import CardFacts

    facts = CardFacts()
    for lic in ("mit", "apache-2.0"):
        facts.add({"license": lic, "realign": {"status": "kept"}})
    assert facts.license() is None
