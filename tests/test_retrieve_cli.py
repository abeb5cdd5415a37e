"""`realign retrieve` end to end: the offline example corpus, and Google's format served by a
local HTTP server (the issue's done-when check, on a small dataset written here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from local_http import serving
from subprocess_runs import kill_when_done
from typer.testing import CliRunner

from realign.cli.main import app
from realign.pipeline.state import state_path
from realign.stages.embedding import available as embedding_available

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LOOPBACK = pytest.mark.block_network(allowed_hosts=[r"127\.0\.0\.1"])


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["retrieve", *args], env=env)


def _units(path: Path) -> dict[str, list[dict[str, Any]]]:
    return {str(r["id"]): r["realign"]["units"] for r in json.loads(path.read_text())}


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, Path]:
    """The example dataset and corpus, copied so the index is built outside the repository."""
    shutil.copy(EXAMPLES / "realign_items.json", tmp_path / "items.json")
    shutil.copy(EXAMPLES / "corpus" / "docs.jsonl", tmp_path / "docs.jsonl")
    return tmp_path / "items.json", tmp_path / "docs.jsonl"


@pytest.fixture(scope="module")
def _trained_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The built-in pack's embedding classifier, trained once for this module (about a minute
    on 2 cores) instead of once per test."""
    if not embedding_available():
        return None
    from realign.criteria import load_pack
    from realign.stages.embedding import EmbeddingClassifier

    home = tmp_path_factory.mktemp("classifier-home")
    EmbeddingClassifier.for_pack(load_pack(), home=home)
    return home / "classifier"


@pytest.fixture(autouse=True)
def _reuse_trained_classifier(_isolated_home: None, _trained_classifier: Path | None) -> None:
    """Copy the module's trained state into this test's own realign home (runs after conftest
    has pointed REALIGN_HOME at a fresh folder)."""
    if _trained_classifier is not None:
        shutil.copytree(_trained_classifier, Path(os.environ["REALIGN_HOME"]) / "classifier")


def _top_doc(unit: dict[str, Any]) -> str:
    return unit["evidence"][0]["url"].split("#", 1)[1]


def test_offline_example_corpus_covers_the_knowledge_questions(example: tuple[Path, Path]) -> None:
    items, corpus = example
    out = items.with_name("ev.json")
    res = _run(str(items), "-o", str(out), "--retrieval", f"local:{corpus}", "--classifier", "none")
    assert res.exit_code == 0, res.output
    units = _units(out)
    assert _top_doc(units["0"][0]).startswith("moon-phases")  # open_qa
    assert _top_doc(units["2"][0]) == "great-wall-space"  # fact_verification
    assert _top_doc(units["4"][0]) == "sky-blue"  # explain_answer
    assert all(e["provider"] == "local" and e["title"] for e in units["0"][0]["evidence"])
    assert units["5"][0]["evidence_note"] == "retrieval: no for math_puzzles"
    assert "evidence" not in units["5"][0]
    assert units["1"][0]["evidence_note"].startswith("no task type")
    assert "records have no task type: run `realign classify` first" in res.output.replace(
        "\n", " "
    )
    assert (corpus.parent / "docs.jsonl.bm25" / "manifest.json").is_file()

    # the unclassified knowledge questions are covered too
    out2 = items.with_name("ev_all.json")
    res = _run(str(items), "-o", str(out2), "--retrieval", f"local:{corpus}", "--all-types")
    assert res.exit_code == 0, res.output
    units = _units(out2)
    assert _top_doc(units["1"][0]) == "stripped-screw"  # how_to_generation
    assert _top_doc(units["3"][0]) == "scifi-beginners"  # recommendations
    assert "records have no task type" not in res.output


@pytest.mark.skipif(not embedding_available(), reason="needs the `classifier` extra")
def test_untyped_units_are_typed_offline_before_retrieval(example: tuple[Path, Path]) -> None:
    items, corpus = example
    out = items.with_name("ev_typed.json")
    res = _run(str(items), "-o", str(out), "--retrieval", f"local:{corpus}")
    assert res.exit_code == 0, res.output
    units = _units(out)
    # ids 1 and 3 carry no category: the embedding classifier types them, then they get evidence
    assert units["1"][0]["task_source"] == "embedding"
    assert units["1"][0]["task_type"] == "how_to_generation"
    assert _top_doc(units["1"][0]) == "stripped-screw"
    assert "records have no task type" not in res.output


# ---------------------------------------------------------------- Google format, local server


class _Server(BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    delay: ClassVar[float] = 0.0  # seconds per answer, so a run can be killed mid-way
    queries: ClassVar[list[dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        qs = parse_qs(url.query)
        type(self).queries.append(qs)
        time.sleep(type(self).delay)
        if url.path != "/customsearch/v1":
            body, status = b'{"error": {"code": 404, "message": "not found"}}', 404
        elif type(self).status == 429:
            body = json.dumps(
                {"error": {"code": 429, "message": "Quota exceeded for quota metric 'Queries'"}}
            ).encode()
            status = 429
        else:
            q, n = qs["q"][0], int(qs["num"][0])
            items = [
                {
                    "title": f"Result {i}",
                    "link": f"https://example.org/{i}",
                    "snippet": f"Result {i} says something useful about: {q}",
                }
                for i in range(n)
            ]
            body, status = json.dumps({"kind": "customsearch#search", "items": items}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Server.status, _Server.delay, _Server.queries = 200, 0.0, []
    with serving(_Server) as url:
        yield url


def _dataset(path: Path) -> Path:
    """ReAlign items: 6 open_qa records and 3 of types without retrieval."""
    rows = [
        {
            "id": i,
            "items": [
                {
                    "from": "human",
                    "value": f"who discovered element number {i}?",
                    "category": "open_qa",
                },
                {"from": "gpt", "value": "Someone."},
            ],
        }
        for i in range(6)
    ] + [
        {
            "id": 10 + i,
            "items": [
                {
                    "from": "human",
                    "value": f"write a poem number {i}",
                    "category": "poem_generation",
                },
                {"from": "gpt", "value": "A poem."},
            ],
        }
        for i in range(3)
    ]
    path.write_text(json.dumps(rows))
    return path


KEYS = {"GOOGLE_API_KEY": "dummy-google-key", "GOOGLE_CSE_ID": "dummy-cx"}


@LOOPBACK
def test_google_format_server_evidence_for_open_qa_only(tmp_path: Path, server: str) -> None:
    data, out = _dataset(tmp_path / "d.json"), tmp_path / "ev.json"
    res = _run(
        str(data), "-o", str(out), "--retrieval", "google", "--search-endpoint", server, env=KEYS
    )
    assert res.exit_code == 0, res.output
    units = _units(out)
    for i in range(6):
        u = units[str(i)][0]
        assert u["query"] == f"who discovered element number {i}?"
        assert [e["url"] for e in u["evidence"]] == [f"https://example.org/{n}" for n in range(5)]
        assert all(e["title"] and e["provider"] == "google" for e in u["evidence"])
    for i in range(3):
        u = units[str(10 + i)][0]
        assert "evidence" not in u and u["evidence_note"] == "retrieval: no for poem_generation"
    assert len(_Server.queries) == 6
    assert all(
        q["key"] == ["dummy-google-key"] and q["cx"] == ["dummy-cx"] for q in _Server.queries
    )
    assert "dummy-google-key" not in res.output
    assert "with evidence 6" in res.output

    # a rerun answers from the cache: no request reaches the server
    res = _run(
        str(data),
        "-o",
        str(tmp_path / "ev2.json"),
        "--retrieval",
        "google",
        "--search-endpoint",
        server,
        env=KEYS,
    )
    assert res.exit_code == 0 and len(_Server.queries) == 6
    assert "(6 from cache)" in res.output


@LOOPBACK
def test_google_quota_error_one_message_and_notes(tmp_path: Path, server: str) -> None:
    _Server.status = 429
    data, out = _dataset(tmp_path / "d.json"), tmp_path / "ev.json"
    res = _run(
        str(data),
        "-o",
        str(out),
        "--retrieval",
        "google",
        "--search-endpoint",
        server,
        "--concurrency",
        "1",
        env=KEYS,
    )
    assert res.exit_code == 0, res.output
    assert res.output.count("search disabled for the rest of this run") == 1
    assert "quota exceeded (HTTP 429)" in res.output
    notes = {u[0]["evidence_note"] for k, u in _units(out).items() if int(k) < 6}
    assert notes == {"search provider disabled: quota exceeded (HTTP 429)"}
    assert len(_Server.queries) == 1  # queued queries are not sent after the quota error


def test_missing_google_keys_fail_clearly(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d.json")
    res = _run(str(data), "-o", str(tmp_path / "o.json"), "--retrieval", "google")
    assert res.exit_code == 2
    assert "GOOGLE_API_KEY and GOOGLE_CSE_ID not set" in res.output


def test_default_is_none_with_a_message(tmp_path: Path) -> None:
    data, out = _dataset(tmp_path / "d.json"), tmp_path / "o.json"
    res = _run(str(data), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "retrieval: none (GOOGLE_API_KEY and GOOGLE_CSE_ID not set, nor SERPER_API_KEY)" in res.output
    assert _units(out)["0"][0]["evidence_note"] == "retrieval: none (no search provider)"


def test_unreadable_records_go_to_failures_file(example: tuple[Path, Path]) -> None:
    _, corpus = example
    data = corpus.with_name("d.jsonl")
    good = {
        "id": "a",
        "items": [
            {"from": "human", "value": "why is the sky blue?", "category": "open_qa"},
            {"from": "gpt", "value": "Scattering."},
        ],
    }
    data.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({**good, "id": "b"}) + "\n")
    out = corpus.with_name("o.jsonl")
    res = _run(str(data), "-o", str(out), "--retrieval", f"local:{corpus}")
    assert res.exit_code == 1
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b"]
    failures = corpus.with_name("o.failures.jsonl").read_text().splitlines()
    assert len(failures) == 1 and json.loads(failures[0])["stage"] == "load"
    assert "d.jsonl:2" in json.loads(failures[0])["error"]
    assert "error: " in res.output and "d.jsonl:2" in res.output  # shown, not only filed


@LOOPBACK
def test_sigkill_then_rerun_resumes_without_searching_again(tmp_path: Path, server: str) -> None:
    n = 60
    rows = [
        {
            "id": i,
            "items": [
                {"from": "human", "value": f"what is fact {i}?", "category": "open_qa"},
                {"from": "gpt", "value": "An answer."},
            ],
        }
        for i in range(n)
    ]
    data, out = tmp_path / "d.json", tmp_path / "ev.json"
    data.write_text(json.dumps(rows))
    _Server.delay = 0.05
    argv = [
        *(sys.executable, "-m", "realign.cli.main", "retrieve", str(data), "-o", str(out)),
        *("--retrieval", "google", "--search-endpoint", server),
        *("--classifier", "none", "--concurrency", "2"),
    ]
    env = {**os.environ, **KEYS, "REALIGN_HOME": str(tmp_path / "home")}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_at_kill = kill_when_done(p, out, at_least=10)
    assert 10 <= done_at_kill < n, "the kill must land mid-run"
    assert not out.exists()
    searched_before = len(_Server.queries)

    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {done_at_kill} records already done" in res.stderr
    units = _units(out)
    assert list(units) == [str(i) for i in range(n)]  # all records, once each, in input order
    assert all(len(u[0]["evidence"]) == 5 for u in units.values())
    # Each record searched once: only the searches in flight at the kill (2) may repeat, and
    # those come from the cache when their answer was stored before the kill.
    assert len(_Server.queries) <= n + 2
    assert len(_Server.queries) - searched_before <= n - done_at_kill + 2
    assert not state_path(out).exists()  # removed once the output is written
