"""Documents in, chunks out: the input of `realign rephrase` and `realign generate`.

Inputs: a `.jsonl` / `.json` / `.parquet` file of objects with a text field (default: the first
of `text`, `content`, `document`, `body` that is present), a single `.txt` / `.md` file, or a
folder of them (read recursively, in sorted path order). A document that cannot be used (no
text field, not a string, empty) becomes a `DocumentError` naming the file, line and field; the
documents after it still come.

Chunking (WRAP found that rephrasing loses information on pieces longer than ~300 tokens):
paragraphs are kept whole and packed greedily up to `max_tokens` cl100k tokens; a longer
paragraph is split into sentences (`realign.search.chunking.split_sentences`), and a sentence
longer than `max_tokens` is cut by tokens. Unlike the retrieval chunker, chunks do not overlap
(an overlap would put the same text into the corpus twice) and paragraph breaks are kept
(they are part of the text a model is trained on).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from realign import tokens
from realign.records import Failure
from realign.search.chunking import split_sentences

DEFAULT_MAX_CHUNK_TOKENS = 300
TEXT_FIELD_GUESSES = ("text", "content", "document", "body")
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_PARAGRAPH = re.compile(r"\n\s*\n")


class Document(BaseModel):
    id: str
    index: int  # 0-based position in the input
    text: str
    title: str = ""
    source: str  # where it came from, for messages: "file:line" or a path


class DocumentError(BaseModel):
    """A document that could not be used; `str()` names the file, line/record and field."""

    source: str
    index: int
    id: str | None = None
    field: str | None = None
    message: str
    record: dict[str, Any] | None = None

    def __str__(self) -> str:
        where = self.source + (f" (id {self.id})" if self.id is not None else "")
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"

    def as_failure(self, index: int) -> Failure:
        """The `load` failure line for this document, at work-item position `index`."""
        return Failure(
            id=self.id or str(self.index),
            index=index,
            stage="load",
            error=str(self),
            record=self.record or {},
        )


class Chunk(BaseModel):
    """A piece of a document; `(doc_id, chunk)` links every output back to it."""

    doc_id: str
    doc_index: int
    chunk: int  # 0-based position within the document
    text: str
    tokens: int
    title: str = ""


class DocumentsError(ValueError):
    """The input as a whole cannot be read (no such path, unknown file type, empty folder)."""


# ---------------------------------------------------------------- reading


def read_documents(
    path: Path,
    *,
    text_field: str | None = None,
    id_field: str = "id",
    title_field: str = "title",
) -> Iterator[Document | DocumentError]:
    """Documents of `path` in input order (see the module doc for what is accepted)."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
        )
        if not files:
            raise DocumentsError(
                f"{path}: the folder has no {', '.join(TEXT_SUFFIXES)} files to read"
            )
        for i, p in enumerate(files):
            yield _text_file(p, i, p.relative_to(path).as_posix())
        return
    if not path.is_file():
        raise DocumentsError(f"{path}: no such file or folder")
    if path.suffix.lower() in TEXT_SUFFIXES:
        yield _text_file(path, 0, path.name)
        return
    yield from _records(path, text_field, id_field, title_field)


def _text_file(path: Path, index: int, doc_id: str) -> Document | DocumentError:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return DocumentError(
            source=str(path), index=index, id=doc_id, message="not UTF-8 text (save it as UTF-8)"
        )
    if not text.strip():
        return DocumentError(source=str(path), index=index, id=doc_id, message="the file is empty")
    return Document(id=doc_id, index=index, text=text, source=str(path))


def _records(
    path: Path, text_field: str | None, id_field: str, title_field: str
) -> Iterator[Document | DocumentError]:
    from realign.io.errors import ReadError
    from realign.io.formats import FormatError
    from realign.io.read import read_objects

    try:
        stream = read_objects(path)
    except FormatError as e:
        raise DocumentsError(str(e)) from None
    for index, line, obj in stream:
        source = f"{path}:{line}" if line is not None else f"{path} record {index}"
        if isinstance(obj, ReadError):
            if obj.index is None:  # the file as a whole (empty, not UTF-8, …)
                raise DocumentsError(str(obj))
            yield DocumentError(
                source=source, index=index, id=obj.id, field=obj.field, message=obj.message
            )
            continue
        yield _from_object(obj, index, source, text_field, id_field, title_field)


def _from_object(
    obj: dict[str, Any],
    index: int,
    source: str,
    text_field: str | None,
    id_field: str,
    title_field: str,
) -> Document | DocumentError:
    raw_id = obj.get(id_field)
    doc_id = str(index) if raw_id is None or isinstance(raw_id, dict | list) else str(raw_id)
    field = text_field or next((f for f in TEXT_FIELD_GUESSES if f in obj), None)
    if field is None or field not in obj:
        keys = ", ".join(list(obj)[:8]) or "none"
        return DocumentError(
            source=source,
            index=index,
            id=doc_id,
            field=text_field or "text",
            message=f"missing (keys: {keys}; name the text field with --text-field KEY)",
            record=obj,
        )
    text = obj[field]
    if not isinstance(text, str):
        return DocumentError(
            source=source,
            index=index,
            id=doc_id,
            field=field,
            message=f"expected text, got {type(text).__name__}",
            record=obj,
        )
    if not text.strip():
        return DocumentError(
            source=source, index=index, id=doc_id, field=field, message="empty text", record=obj
        )
    title = obj.get(title_field)
    return Document(
        id=doc_id,
        index=index,
        text=text,
        title=title.strip() if isinstance(title, str) else "",
        source=source,
    )


# ---------------------------------------------------------------- chunking


def _cut_by_tokens(text: str, max_tokens: int) -> list[str]:
    enc = tokens.encoding()
    ids = enc.encode(text, disallowed_special=())
    return [enc.decode(ids[i : i + max_tokens]).strip() for i in range(0, len(ids), max_tokens)]


def _pieces(text: str, max_tokens: int) -> list[tuple[str, bool]]:
    """(piece, starts a paragraph): paragraphs, else their sentences, else token slices."""
    out: list[tuple[str, bool]] = []
    for para in _PARAGRAPH.split(text.replace("\r\n", "\n")):
        para = "\n".join(line.rstrip() for line in para.strip("\n").splitlines()).strip()
        if not para:
            continue
        if tokens.count(para) <= max_tokens:
            out.append((para, True))
            continue
        first = True
        for sent in split_sentences(para):
            parts = [sent] if tokens.count(sent) <= max_tokens else _cut_by_tokens(sent, max_tokens)
            for part in parts:
                if part:
                    out.append((part, first))
                    first = False
    return out


def chunk_text(text: str, max_tokens: int = DEFAULT_MAX_CHUNK_TOKENS) -> list[str]:
    """Non-overlapping chunks of at most ~`max_tokens` tokens, paragraph breaks kept."""
    if max_tokens < 16:
        raise ValueError(f"max_tokens must be at least 16, got {max_tokens}")
    chunks: list[str] = []
    current = ""
    size = 0
    for piece, new_para in _pieces(text, max_tokens):
        n = tokens.count(piece)
        # +1: the joining "\n\n" or " " may cost a token of its own.
        if current and size + 1 + n > max_tokens:
            chunks.append(current)
            current, size = "", 0
        if current:
            current += ("\n\n" if new_para else " ") + piece
            size += 1 + n
        else:
            current, size = piece, n
    if current:
        chunks.append(current)
    return chunks


def chunk_document(doc: Document, max_tokens: int = DEFAULT_MAX_CHUNK_TOKENS) -> list[Chunk]:
    return [
        Chunk(
            doc_id=doc.id,
            doc_index=doc.index,
            chunk=i,
            text=t,
            tokens=tokens.count(t),
            title=doc.title,
        )
        for i, t in enumerate(chunk_text(doc.text, max_tokens))
    ]


def iter_chunks(
    docs: Iterator[Document | DocumentError], max_tokens: int = DEFAULT_MAX_CHUNK_TOKENS
) -> Iterator[Chunk | DocumentError]:
    """Every chunk of every document in order; unusable documents pass through as errors."""
    for doc in docs:
        if isinstance(doc, DocumentError):
            yield doc
        else:
            yield from chunk_document(doc, max_tokens)
