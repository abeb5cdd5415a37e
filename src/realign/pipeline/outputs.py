"""The one check of everything a command will write, made before it reads its input in full
and before any request: a command that could not save its results must not pay for them.

Every command that writes (`run`, `classify`, `retrieve`, `judge`, `report`, `filter`,
`rephrase`, `generate`, `convert`) describes its files as `Output`s and calls `check_outputs`.
It checks, for each file it will write (the output and its side files, such as
`<OUT stem>.failures.jsonl`):
- the file type is one the writer knows (and `--output-format` is a format);
- the path is not a folder, nor a device or pipe (outputs are written to a temporary file and
  renamed into place, so they must be regular files);
- the folder can be written in: it exists, or the nearest folder above it does and the
  missing ones can be made there; no part of the path is a file;
- the names fit the file system, with the run state and temporary files beside them;
- it is not an input, nor another file of the same command;
- for a resumable job, no other run holds the output's lock;
- with `store`, that `$REALIGN_HOME` and the request cache are usable.

What fails is a `UsageError` (the CLI prints one `error:` line, exit 2). Nothing is created
or left behind by the check.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from realign.errors import UsageError

HTML_TYPES = (".html", ".htm")
JSON_TYPES = (".json",)
JSONL_TYPES = (".jsonl",)
# The longest name a resumable job puts beside its output (`pipeline/state.py`).
STATE_SUFFIX = ".realign-state.sqlite-wal"


@dataclass(frozen=True)
class Output:
    """A file a command writes. `types`: the file types allowed, None for a dataset (whatever
    `io.write.RecordWriter` writes, in `output_format`). `flag` names it in messages."""

    path: Path
    types: tuple[str, ...] | None = None
    flag: str = "-o"
    side_files: tuple[Path, ...] = ()
    resumable: bool = False  # a run state and its lock beside it (`pipeline/state.py`)
    output_format: str | None = None
    fields: str | None = None  # the mapping `--output-format fields` writes through


def job_output(
    path: Path,
    output_format: str | None = None,
    fields: str | None = None,
    *,
    side_files: Iterable[Path] = (),
    types: tuple[str, ...] | None = None,
) -> Output:
    """The output of a resumable job (`cli/job.py`), with its failures file beside it."""
    from realign.pipeline.record import failures_path

    sides = (failures_path(path), *side_files)
    return Output(path, types, "-o", sides, True, output_format, fields)


def corpus_of(retrieval: str | None) -> Path | None:
    """The corpus `--retrieval local:PATH` reads (an input no output may overwrite)."""
    from realign.search.registry import parse_spec

    name, arg = parse_spec(retrieval) if retrieval else ("", "")
    return Path(arg) if name == "local" and arg else None


def check_outputs(
    outputs: Sequence[Output],
    inputs: Iterable[Path | str | None] = (),
    *,
    store: bool = False,
    cache: bool = True,
) -> None:
    """A `UsageError` naming the first problem with what the command will write (see the
    module docstring); nothing is written. `store`: the command uses `$REALIGN_HOME` (and
    the request cache, unless `cache` is False: `--no-cache`)."""
    sources = [Path(p) for p in inputs if p is not None]
    written: list[tuple[Path, str]] = []
    for out in outputs:
        files = [(out.path, f"{out.flag} {out.path}")]
        files += [(side, f"{side} (written beside {out.path})") for side in out.side_files]
        for path, label in files:
            _check_file(path, label, resumable=out.resumable and path == out.path)
            if path == out.path:
                _check_type(out)
            for source in sources:
                if _same_path(path, source):
                    raise UsageError(
                        f"{label} would overwrite the input {source}; choose another path"
                    )
            for other, other_label in written:
                if _same_path(path, other):
                    raise UsageError(f"{label} and {other_label} are the same file")
            written.append((path, label))
        if out.resumable:
            _check_lock(out.path)
    if store:
        check_store(cache)


def check_store(cache: bool = True) -> None:
    """`$REALIGN_HOME` (cache, settings, indexes) and the request cache can be used: the home
    is a folder or can be made, the cache is a realign cache or can be created."""
    from realign.config import realign_home

    home = realign_home()
    if os.path.lexists(home) and not home.is_dir():
        raise UsageError(
            f"REALIGN_HOME {home} is not a folder: realign keeps its cache and settings there; "
            "point REALIGN_HOME at a folder"
        )
    problem = _folder_problem(home)
    if problem:
        raise UsageError(f"REALIGN_HOME {home}: {problem}")
    if not cache:
        return
    from realign.llm.cache import CacheError, check_cache, default_cache_path

    path = default_cache_path()
    if path.is_dir():
        raise UsageError(f"the request cache {path} is a folder; it must be a file")
    problem = _folder_problem(path.parent)
    if problem:
        raise UsageError(f"the request cache {path}: {problem}")
    try:
        check_cache(path)
    except CacheError as e:
        raise UsageError(f"{e} (or run without the cache: --no-cache)") from None


def _check_type(out: Output) -> None:
    if out.types is None:
        from realign.io.formats import FormatError
        from realign.io.write import check_writable

        try:
            check_writable(out.path, out.output_format, out.fields)
        except FormatError as e:
            raise UsageError(str(e)) from None
        return
    ext = out.path.suffix.lower()
    if ext not in out.types:
        what = f"unknown output type '{ext}'" if ext else "no file type (extension)"
        raise UsageError(f"{out.flag} {out.path}: {what}; use {', '.join(out.types)}")


def _check_file(path: Path, label: str, *, resumable: bool) -> None:
    if path.is_dir():
        raise UsageError(f"{label} is a folder; name a file in it, e.g. {path / 'out.jsonl'}")
    if path.exists() and not path.is_file():
        raise UsageError(
            f"{label} is not a regular file (a device or a pipe): realign writes its files to "
            "a temporary file renamed into place; name a regular file"
        )
    problem = _folder_problem(path.parent)
    if problem:
        raise UsageError(f"{label}: {problem}")
    names = [path.name, f".{path.name}.partial"]
    if resumable:
        names.append(f".{path.name}{STATE_SUFFIX}")
    limit = _name_max(path.parent)
    too_long = [n for n in names if len(os.fsencode(n)) > limit]
    if too_long:
        raise UsageError(
            f"{label}: the name is too long for this file system (realign writes "
            f"{too_long[-1]!r} beside it; names may have {limit} bytes); choose a shorter one"
        )


def _check_lock(output: Path) -> None:
    from realign.pipeline.state import RunLocked, probe_lock

    try:
        probe_lock(output)
    except RunLocked as e:
        raise UsageError(str(e)) from None


def _same_path(a: Path, b: Path) -> bool:
    """The same file: the same path once resolved, or two links to one file."""
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _nearest_existing(folder: Path) -> Path:
    p = folder.absolute()
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    return p


def _folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (made first when missing), or None. The nearest
    existing folder is tried by creating and removing a temporary file in it: the only sure
    test (permissions, a read-only file system, root on a special file system)."""
    p = _nearest_existing(folder)
    if not p.exists():
        return f"{p} is a broken link"
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".realign-probe-", dir=p)
    except OSError as e:
        return f"cannot write in the folder {p}: {e.strerror or e}"
    os.close(fd)
    os.unlink(probe)
    return None


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(_nearest_existing(folder), "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
