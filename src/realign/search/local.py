"""`local:PATH`: BM25 search over your own documents, fully offline.

PATH is one of
- a JSONL file, one document a line: `{"id": ..., "text": ..., "title"?: ..., "url"?: ...}`;
- a folder: every `.txt` / `.md` file below it is a document (id = path relative to PATH,
  title = first line of a `.md` heading or the file name);
- a single `.txt` / `.md` file.

Documents are split into ~200-token passages with overlap (`realign.search.chunking`) and
indexed with `bm25s` (lower-cased words, English stop words removed, plurals folded). A search
returns the best passages, leaving out those scoring under 30% of the best one (off-topic).

The index is saved beside the corpus — `<file>.bm25/` for a file, `<folder>/.realign-index/`
for a folder — with a manifest holding the corpus fingerprint (relative paths, sizes, mtimes
and SHA-256 of the contents) and the chunking settings. It is reused while the fingerprint
matches and rebuilt when any document changes. When the corpus
location is read-only the index goes to `$REALIGN_HOME/indexes/` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from realign.config import realign_home
from realign.hashing import digest
from realign.records import Evidence
from realign.search import chunking
from realign.search.base import SearchError

log = logging.getLogger(__name__)

INDEX_VERSION = 2  # bump when the index layout, tokenizer or stemmer changes
DOC_SUFFIXES = (".txt", ".md")
FOLDER_INDEX = ".realign-index"
MIN_RELATIVE_SCORE = 0.3  # passages scoring under 30% of the best hit are dropped


class Document(BaseModel):
    id: str
    text: str
    title: str = ""
    url: str = ""


class Chunk(BaseModel):
    doc_id: str
    text: str
    title: str = ""
    url: str = ""


class FileState(BaseModel):
    size: int
    mtime_ns: int
    sha256: str


class Manifest(BaseModel):
    version: int
    settings: dict[str, int]
    files: dict[str, FileState]
    fingerprint: str
    documents: int
    chunks: int


# ---------------------------------------------------------------- corpus reading


def corpus_files(path: Path) -> list[Path]:
    """The files that make up the corpus at `path` (sorted, index folder excluded)."""
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix.lower() in DOC_SUFFIXES
            and FOLDER_INDEX not in p.relative_to(path).parts
        )
    if path.is_file():
        return [path]
    raise SearchError("other", "local", f"{path}: no such corpus file or folder")


def read_documents(path: Path) -> list[Document]:
    """All documents of the corpus. Errors name the file, line and field."""
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return _read_jsonl(path)
    if path.is_file() and path.suffix.lower() not in DOC_SUFFIXES:
        raise SearchError(
            "other", "local", f"{path}: a corpus is a .jsonl file, a .txt/.md file or a folder"
        )
    base = path if path.is_dir() else path.parent
    docs = []
    for f in corpus_files(path):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SearchError("other", "local", f"{f}: not UTF-8 text") from None
        rel = f.relative_to(base).as_posix()
        docs.append(Document(id=rel, text=text, title=_title_of(text, f)))
    return docs


def _title_of(text: str, f: Path) -> str:
    first = text.lstrip().split("\n", 1)[0].strip()
    if f.suffix.lower() == ".md" and first.startswith("#"):
        return first.lstrip("#").strip()
    return f.stem.replace("_", " ").replace("-", " ")


def _read_jsonl(path: Path) -> list[Document]:
    docs: list[Document] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise SearchError(
                    "other", "local", f"{path}:{lineno}: not valid JSON: {e}"
                ) from None
            if not isinstance(obj, dict):
                raise SearchError("other", "local", f"{path}:{lineno}: expected a JSON object")
            for field in ("id", "text"):
                if field not in obj or not str(obj[field]).strip():
                    raise SearchError(
                        "other", "local", f"{path}:{lineno}: field '{field}' is missing or empty"
                    )
            doc_id = str(obj["id"])
            if doc_id in seen:
                raise SearchError(
                    "other",
                    "local",
                    f"{path}:{lineno}: field 'id': '{doc_id}' already used on line {seen[doc_id]}",
                )
            seen[doc_id] = lineno
            docs.append(
                Document(
                    id=doc_id,
                    text=str(obj["text"]),
                    title=str(obj.get("title") or ""),
                    url=str(obj.get("url") or ""),
                )
            )
    return docs


def chunk_documents(docs: list[Document]) -> list[Chunk]:
    return [
        Chunk(doc_id=d.id, text=t, title=d.title, url=d.url)
        for d in docs
        for t in chunking.chunk_text(d.text)
    ]


# ---------------------------------------------------------------- fingerprint


def _sha256(f: Path) -> str:
    h = hashlib.sha256()
    with f.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_states(path: Path, previous: dict[str, FileState] | None = None) -> dict[str, FileState]:
    """Size, mtime and content hash per corpus file; a file whose size and mtime are unchanged
    reuses its previous hash so an unchanged corpus is not re-read."""
    base = path if path.is_dir() else path.parent
    previous = previous or {}
    out: dict[str, FileState] = {}
    for f in corpus_files(path):
        st = f.stat()
        rel = f.relative_to(base).as_posix()
        old = previous.get(rel)
        if old and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
            out[rel] = old
        else:
            out[rel] = FileState(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=_sha256(f))
    return out


def fingerprint(states: dict[str, FileState], settings: dict[str, int]) -> str:
    """Changes when a file is added, removed or edited, or the index settings change.
    (Contents decide: touching a file without editing it keeps the index.)"""
    return digest(
        {"v": INDEX_VERSION, "s": settings, "f": {k: v.sha256 for k, v in sorted(states.items())}}
    )


def _settings() -> dict[str, int]:
    return {
        "target_tokens": chunking.TARGET_TOKENS,
        "max_tokens": chunking.MAX_TOKENS,
        "overlap_tokens": chunking.OVERLAP_TOKENS,
    }


def index_dir_for(path: Path) -> Path:
    """Where the index of the corpus at `path` lives (beside it; see the module docstring)."""
    return path / FOLDER_INDEX if path.is_dir() else path.with_name(path.name + ".bm25")


def _fallback_index_dir(path: Path) -> Path:
    home = realign_home()
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return home / "indexes" / f"{path.name}-{digest}"


# ---------------------------------------------------------------- tokenizing


def _stem(words: list[str]) -> list[str]:
    """A light plural stemmer ('tides' → 'tide', 'stories' → 'story'), enough for BM25 to
    match singular and plural; no extra dependency."""
    out = []
    for w in words:
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return out


# Question words, auxiliaries and pronouns (NLTK's English list, as bundled with bm25s) plus a
# few request words, so "How do I ... ?" matches on its content words only.
_EXTRA_STOPWORDS = ("could", "would", "whose", "please", "tell", "get", "got", "also")


def _tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return bm25s.tokenize(
        texts,
        stopwords=[*STOPWORDS_EN_PLUS, *_EXTRA_STOPWORDS],
        stemmer=_stem,
        return_ids=False,
        show_progress=False,
    )


# ---------------------------------------------------------------- the provider


class LocalSearch:
    name = "local"

    def __init__(self, path: str | Path, *, index_dir: str | Path | None = None) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise SearchError("other", "local", f"{self.path}: no such corpus file or folder")
        self.index_dir = Path(index_dir) if index_dir else index_dir_for(self.path)
        self.rebuilt = False  # whether opening built the index (for messages and tests)
        self._retriever: Any = None
        self._chunks: list[Chunk] = []
        self.manifest = self._open()

    @property
    def provider_id(self) -> str:
        # The fingerprint makes cached answers from an older corpus version miss.
        return f"local:{self.path.resolve()}:{self.manifest.fingerprint[:16]}"

    # -- index lifecycle

    def _open(self) -> Manifest:
        settings = _settings()
        candidates = [
            (w, _load_manifest(w)) for w in (self.index_dir, _fallback_index_dir(self.path))
        ]
        previous = next((m.files for _, m in candidates if m is not None), None)
        states = file_states(self.path, previous)
        fp = fingerprint(states, settings)
        for where, old in candidates:
            if old and old.fingerprint == fp:
                try:
                    self._load(where)
                    self.index_dir = where
                    return old
                except (OSError, ValueError, KeyError) as e:  # damaged index: rebuild it
                    log.warning("local index %s unreadable (%s); rebuilding", where, e)
        return self._build(states, fp, settings)

    def _build(self, states: dict[str, FileState], fp: str, settings: dict[str, int]) -> Manifest:
        import bm25s

        docs = read_documents(self.path)
        chunks = chunk_documents(docs)
        if not chunks:
            raise SearchError("other", "local", f"{self.path}: the corpus has no text to index")
        log.info("indexing %d documents (%d passages) of %s", len(docs), len(chunks), self.path)
        retriever = bm25s.BM25()
        retriever.index(_tokenize([f"{c.title}\n{c.text}" for c in chunks]), show_progress=False)
        manifest = Manifest(
            version=INDEX_VERSION,
            settings=settings,
            files=states,
            fingerprint=fp,
            documents=len(docs),
            chunks=len(chunks),
        )
        self._retriever, self._chunks, self.rebuilt = retriever, chunks, True
        for where in (self.index_dir, _fallback_index_dir(self.path)):
            try:
                _save(where, retriever, chunks, manifest)
                self.index_dir = where
                break
            except OSError as e:
                log.warning("cannot write the index to %s (%s); trying the realign home", where, e)
        return manifest

    def _load(self, where: Path) -> None:
        import bm25s

        self._retriever = bm25s.BM25.load(str(where / "bm25"), show_progress=False)
        with (where / "chunks.jsonl").open(encoding="utf-8") as fh:
            self._chunks = [Chunk.model_validate_json(line) for line in fh if line.strip()]
        if len(self._chunks) != self._retriever.scores["num_docs"]:
            raise ValueError("chunk count does not match the BM25 index")

    # -- searching

    async def search(self, query: str, k: int) -> list[Evidence]:
        q = _tokenize([query])
        if not q[0] or k <= 0:
            return []
        docs, scores = self._retriever.retrieve(q, k=min(k, len(self._chunks)), show_progress=False)
        out = []
        best = float(scores[0][0]) if len(scores[0]) else 0.0
        for idx, score in zip(docs[0], scores[0], strict=True):
            # no query word in the passage, or far weaker than the best: off-topic
            if score <= 0 or score < MIN_RELATIVE_SCORE * best:
                continue
            c = self._chunks[int(idx)]
            out.append(
                Evidence(
                    snippet=c.text,
                    title=c.title or c.doc_id,
                    url=c.url or f"local:{self.path.name}#{c.doc_id}",
                    provider="local",
                )
            )
        return out


def _load_manifest(where: Path) -> Manifest | None:
    try:
        m = Manifest.model_validate_json((where / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if m.version == INDEX_VERSION else None


def _save(where: Path, retriever: Any, chunks: list[Chunk], manifest: Manifest) -> None:
    """Write the index into a temporary folder, then swap it in, so a reader (or a second
    process building at the same time) never sees half an index."""
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=where.name + ".tmp-", dir=where.parent))
    try:
        retriever.save(str(tmp / "bm25"), show_progress=False)
        with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as fh:
            for c in chunks:
                fh.write(c.model_dump_json() + "\n")
        # The manifest last: its presence marks a complete index.
        (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=1), encoding="utf-8")
        if where.exists():
            shutil.rmtree(where, ignore_errors=True)
        tmp.replace(where)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
