"""Local corpus search, for real: chunking, BM25 index build, query, reuse, rebuild."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path

import pytest

from realign import tokens
from realign.search import chunking, local
from realign.search.base import SearchError
from realign.search.local import FOLDER_INDEX, LocalSearch, index_dir_for
from realign.search.registry import make_provider

DOCS = [
    {
        "id": "tides",
        "title": "Why the sea has tides",
        "text": "Tides are caused mainly by the Moon's gravity pulling on the oceans. "
        "The Sun adds a smaller pull, so spring tides happen when Sun and Moon line up.",
        "url": "https://example.org/tides",
    },
    {
        "id": "bread",
        "title": "Baking sourdough bread",
        "text": "Sourdough bread rises with a starter of wild yeast and lactic acid bacteria. "
        "Feed the starter flour and water daily and bake when it doubles.",
    },
    {
        "id": "python",
        "text": "Python is a programming language created by Guido van Rossum, first released "
        "in 1991. Its design favours readable code with significant indentation.",
    },
]


def _write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _search(s: LocalSearch, q: str, k: int = 3) -> list:
    return asyncio.run(s.search(q, k))


def test_chunk_text_short_text_is_one_chunk() -> None:
    assert chunking.chunk_text("One short paragraph.\n\nAnother one.") == [
        "One short paragraph. Another one."
    ]


def test_chunk_text_long_text_respects_sizes_and_overlaps() -> None:
    sentences = [
        f"Sentence number {i} talks about topic {i % 7} in some detail here." for i in range(120)
    ]
    paras = ["  ".join(sentences[i : i + 6]) for i in range(0, 120, 6)]
    chunks = chunking.chunk_text("\n\n".join(paras))
    assert len(chunks) > 3
    assert all(tokens.count(c) <= chunking.MAX_TOKENS + 5 for c in chunks)
    assert all(tokens.count(c) >= 100 for c in chunks[:-1])
    # each chunk starts with the last sentence(s) of the one before it, within the overlap
    for prev, nxt in itertools.pairwise(chunks):
        prev_s, next_s = chunking.split_sentences(prev), chunking.split_sentences(nxt)
        shared = next(n for n in range(len(prev_s), 0, -1) if prev_s[-n:] == next_s[:n])
        assert shared >= 1 and tokens.count(" ".join(next_s[:shared])) <= chunking.OVERLAP_TOKENS
    # nothing lost: every sentence is in some chunk
    joined = " ".join(chunks)
    assert all(s in joined for s in sentences)


def test_chunk_text_cuts_an_over_long_sentence() -> None:
    chunks = chunking.chunk_text("word " * 1000)
    assert len(chunks) >= 4 and all(tokens.count(c) <= chunking.MAX_TOKENS + 5 for c in chunks)


def test_jsonl_corpus_build_query_reuse_and_rebuild(tmp_path: Path) -> None:
    corpus = _write_jsonl(tmp_path / "docs.jsonl", DOCS)
    s = LocalSearch(corpus)
    assert s.rebuilt and s.index_dir == tmp_path / "docs.jsonl.bm25"
    assert (s.index_dir / "manifest.json").is_file()

    found = _search(s, "What causes the tides in the ocean?")
    assert found[0].url == "https://example.org/tides"
    assert found[0].title == "Why the sea has tides" and found[0].provider == "local"
    assert all("sourdough" not in e.snippet.lower() for e in found)  # zero-score passages dropped
    # a document without url gets a local source reference
    assert _search(s, "who created python")[0].url == "local:docs.jsonl#python"
    assert _search(s, "zzqx") == []

    # unchanged corpus: the saved index is reused, even when the file is touched
    os.utime(corpus, None)
    again = LocalSearch(corpus)
    assert not again.rebuilt
    assert again.provider_id == s.provider_id
    assert _search(again, "tides moon")[0].url == "https://example.org/tides"

    # an edit changes the fingerprint: rebuilt, and the new text is found
    _write_jsonl(corpus, [*DOCS, {"id": "volcano", "text": "Volcanoes erupt when magma rises."}])
    edited = LocalSearch(corpus)
    assert edited.rebuilt and edited.provider_id != s.provider_id
    assert _search(edited, "why do volcanoes erupt")[0].url == "local:docs.jsonl#volcano"


def test_folder_corpus(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "tides.md").write_text("# Ocean tides\n\nThe Moon's gravity raises tides.\n")
    (folder / "sub" / "bread.txt").write_text("Sourdough uses a wild yeast starter.\n")
    (folder / "image.png").write_bytes(b"\x89PNG")  # ignored
    s = LocalSearch(folder)
    assert s.index_dir == folder / FOLDER_INDEX and s.manifest.documents == 2
    hit = _search(s, "sourdough starter")[0]
    assert hit.url == "local:notes#sub/bread.txt" and hit.title == "bread"
    assert _search(s, "moon gravity")[0].title == "Ocean tides"
    # the index folder inside the corpus is not itself part of the corpus
    assert not LocalSearch(folder).rebuilt
    (folder / "new.txt").write_text("Volcanoes erupt when magma rises.\n")
    assert LocalSearch(folder).rebuilt


def test_damaged_index_is_rebuilt(tmp_path: Path) -> None:
    corpus = _write_jsonl(tmp_path / "docs.jsonl", DOCS)
    LocalSearch(corpus)
    (index_dir_for(corpus) / "chunks.jsonl").write_text("")
    s = LocalSearch(corpus)
    assert s.rebuilt and _search(s, "tides")[0].url == "https://example.org/tides"


def test_read_only_location_falls_back_to_realign_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _write_jsonl(tmp_path / "docs.jsonl", DOCS)
    real_save = local._save

    def save(where: Path, *args: object) -> None:
        if where == index_dir_for(corpus):  # as if the corpus folder were read-only
            raise PermissionError(13, "Permission denied", str(where))
        real_save(where, *args)

    monkeypatch.setattr(local, "_save", save)
    s = LocalSearch(corpus)
    assert s.rebuilt and Path(os.environ["REALIGN_HOME"]) in s.index_dir.parents
    assert not index_dir_for(corpus).exists()
    reopened = LocalSearch(corpus)
    assert not reopened.rebuilt and reopened.index_dir == s.index_dir


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a"}', "docs.jsonl:2: field 'text' is missing or empty"),
        ('{"text": "x"}', "docs.jsonl:2: field 'id' is missing or empty"),
        ("not json", "docs.jsonl:2: not valid JSON"),
        (
            '{"id": "tides", "text": "again"}',
            "docs.jsonl:2: field 'id': 'tides' already used on line 1",
        ),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps(DOCS[0]) + "\n" + line + "\n")
    with pytest.raises(SearchError, match=message):
        LocalSearch(corpus)


def test_registry_local_spec(tmp_path: Path) -> None:
    corpus = _write_jsonl(tmp_path / "docs.jsonl", DOCS)
    assert isinstance(make_provider(f"local:{corpus}"), LocalSearch)
    assert make_provider("none") is None
    with pytest.raises(SearchError, match="no such corpus"):
        make_provider(f"local:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(SearchError, match="give the corpus path"):
        make_provider("local:")
    with pytest.raises(SearchError, match="does not apply"):
        make_provider(f"local:{corpus}", endpoint="http://x")
    with pytest.raises(SearchError, match="unknown retrieval 'bing'"):
        make_provider("bing")
