"""Never worse (issue 20): the labelled corpus of rewrites in `tests/data/filter_corpus/`, run
through the real `realign run` with a scripted backend (`benchmarks/filter_corpus.py`).

The corpus holds eight kinds of bad rewrite (the original must be kept) and good ones (the
rewrite must be accepted). The targets are the issue's: at least 98% of the bad caught and
at least 90% of the good accepted, overall; the message names every kind's score and the
misses, so a failure says where the filter falls short.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks are scripts, not a package

from filter_corpus import (  # noqa: E402
    DEFAULT_CORPUS,
    GOOD,
    KINDS,
    CorpusBackend,
    CorpusError,
    Report,
    load_corpus,
    rewriting_types,
    run_corpus,
    score,
)

from realign.llm.base import ChatRequest, Message  # noqa: E402


@pytest.fixture(scope="module")
def cases():
    return load_corpus(DEFAULT_CORPUS)


@pytest.fixture(scope="module")
def report(cases) -> Report:
    return score(run_corpus(cases))


def test_corpus_shape(cases):
    kinds = Counter(c.kind for c in cases)
    bad = sum(n for k, n in kinds.items() if k != GOOD)
    assert len(cases) >= 200, kinds
    assert bad >= 130, kinds
    assert kinds[GOOD] >= 70, kinds
    for kind in KINDS:
        assert kinds[kind] >= 8, f"only {kinds[kind]} cases of kind {kind!r}"
    types = rewriting_types()
    assert {c.task_type for c in cases} <= types
    # Varied, not one task type: the held-out corpus will not be.
    assert len({c.task_type for c in cases}) >= 20
    assert len({c.id for c in cases}) == len(cases)
    assert any(c.finish_reason == "length" for c in cases if c.kind == "truncation")
    assert any(c.evidence for c in cases if c.kind == GOOD)
    for c in cases:
        assert c.rewrite.strip() != c.original.strip(), f"{c.id}: the rewrite is the original"


def test_every_case_reaches_a_decision(report):
    """A failed or skipped record is neither a catch nor an acceptance: there must be none."""
    assert not report.broken, [(o.case.id, o.status, o.reason) for o in report.broken]


def test_filter_meets_the_targets(report):
    misses = "; ".join(f"{o.case.id} ({o.rule})" for o in report.misses)
    met = report.bad.rate >= 0.98 and report.good.rate >= 0.90
    assert met, f"{report.summary()}\nmisses: {misses}"


def test_the_backend_scripts_the_case_and_its_finish_reason(cases):
    """The scripted backend answers a case's rewrite request with its rewrite and reports its
    finish reason; any other request is refused (the corpus gives task type and evidence)."""
    import asyncio

    from realign.llm.base import BackendError

    cut = next(c for c in cases if c.finish_reason == "length")
    backend = CorpusBackend(cases)
    msgs = [Message(role="user", content="rewrite this")]
    out = asyncio.run(backend.chat(ChatRequest(stage="rewrite", messages=msgs, record_id=cut.id)))
    assert json.loads(out.texts[0])["response"] == cut.rewrite
    assert out.finish_reasons == ["length"]
    with pytest.raises(BackendError):
        asyncio.run(backend.chat(ChatRequest(stage="classify", messages=msgs, record_id=cut.id)))


def test_a_bad_corpus_line_names_its_file_line_and_field(tmp_path):
    good = {
        "id": "x-1",
        "kind": "meta",
        "expect": "keep",
        "task_type": "open_qa",
        "instruction": "q",
        "original": "a",
        "rewrite": "b",
        "note": "n",
    }
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "x-2", "expect": "accept"}))
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: kind 'meta' expects 'keep'"):
        load_corpus(path)
    path.write_text(json.dumps({**good, "task_type": "story_generation"}) + "\n")
    with pytest.raises(CorpusError, match=r"c\.jsonl:1: task_type 'story_generation'"):
        load_corpus(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(CorpusError, match="already used"):
        load_corpus(path)
