"""Dataset file names and compression: `.jsonl.gz`, `.json.gz` (gzip, always) and `.jsonl.zst`,
`.json.zst` (zstd, with the `zstd` extra) are read and written transparently.

A file is typed by its name: `data_type` is the extension under the compression one, and the
side files of an output (`out.failures.jsonl` for `out.jsonl.gz`) are named from `stem`.
Compressed bytes under a plain name are caught by their magic bytes (`magic_problem`), so the
file is one clear error instead of a "malformed JSON" failure per line.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import IO, Any

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PAR1": "a Parquet file",
}
_RENAME = {"gzip-compressed": ".gz", "zstd-compressed": ".zst", "a Parquet file": ""}


def compression(path: Path) -> str | None:
    return COMPRESSIONS.get(path.suffix.lower())


def data_type(path: Path) -> str:
    """The extension that says what the file holds: `.jsonl` for `x.jsonl.gz`."""
    if compression(path) is None:
        return path.suffix.lower()
    return Path(path.stem).suffix.lower()


def stem(path: Path) -> str:
    """The name without its data and compression extensions: `out` for `out.jsonl.gz`."""
    name = path.stem if compression(path) is None else Path(path.stem).stem
    return name


def side_path(output: Path, kind: str) -> Path:
    """A side file beside `output`, always plain JSON Lines: `out.failures.jsonl`."""
    return output.with_name(f"{stem(output)}.{kind}.jsonl")


class MissingExtra(ValueError):
    """A compression whose package is not installed (a usage error: exit 2)."""


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        raise MissingExtra(
            "reading or writing .zst files needs the `zstd` extra: pip install 'realign[zstd]'"
        ) from None
    return zstandard


def check_compression(path: Path) -> None:
    """`MissingExtra` when `path` names a compression realign cannot use here."""
    if compression(path) == "zstd":
        _zstd()


def open_read(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed by its name."""
    kind = compression(path)
    if kind == "gzip":
        return io.BufferedReader(gzip.GzipFile(path, "rb"))
    if kind == "zstd":
        zstd = _zstd()
        return io.BufferedReader(zstd.ZstdDecompressor().stream_reader(path.open("rb")))
    return path.open("rb")


def compressed_text(path: Path, name: Path) -> IO[str]:
    """A UTF-8 text writer to `path`, compressed as the final `name` says."""
    kind = compression(name)
    if kind == "gzip":
        return gzip.open(path, "wt", encoding="utf-8", newline="\n")
    if kind == "zstd":
        zstd = _zstd()
        writer = zstd.ZstdCompressor().stream_writer(path.open("wb"))
        return io.TextIOWrapper(writer, encoding="utf-8", newline="\n")
    return path.open("w", encoding="utf-8", newline="\n")


def magic_problem(head: bytes, path: Path) -> str | None:
    """What a plainly named file really is, when its first bytes say it is compressed."""
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            fix = (
                f"name it {path.name}{_RENAME[what]} to read it as is, or decompress it"
                if _RENAME[what]
                else "give it the .parquet extension"
            )
            return f"file is {what}, not JSON text; {fix}"
    return None


def read_error(path: Path, e: Exception) -> str:
    """A compressed file that cannot be decompressed (damaged, truncated, or not compressed)."""
    return f"cannot decompress this {compression(path)} file ({type(e).__name__}: {e})"
