"""`realign push`: a run output to a Hugging Face dataset repository, as Parquet shards and a
dataset card, in one commit (all files or none).

Everything local (token, the output, its failures file, the judge output, the shards) is
checked before the first request; a Hub or network error after that names what was done."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realign.errors import UsageError
from realign.hub.card import (
    CardFacts,
    is_realign_output,
    judge_summary,
    render_card,
    shard_name,
    splits_of,
)

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
SPLIT = re.compile(r"^[A-Za-z0-9_]+$")
DEFAULT_SHARD_MB = 256.0
NO_TOKEN = (
    "no Hugging Face token: set HF_TOKEN to a token with write access, or log in once with "
    "`hf auth login`"
)


@dataclass
class PushRequest:
    output: Path
    repo: str
    private: bool = False
    split: str = "train"
    card_only: bool = False
    license: str | None = None
    overwrite: bool = False
    judge: Path | None = None
    max_shard_mb: float = DEFAULT_SHARD_MB


@dataclass
class PushResult:
    url: str
    created: bool
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    records: int = 0
    license: str = ""


def check_request(req: PushRequest) -> None:
    if not REPO_ID.match(req.repo):
        raise UsageError(f"--repo {req.repo!r}: give the dataset repository as ORG/NAME")
    if not SPLIT.match(req.split):
        raise UsageError(f"--split {req.split!r}: use letters, digits and underscores")
    if req.max_shard_mb <= 0:
        raise UsageError("--max-shard-mb must be positive")


def token_or_fail() -> str:
    from huggingface_hub import get_token  # HF_TOKEN, else the saved login

    token = get_token()
    if not token:
        raise UsageError(NO_TOKEN)
    return token


def _objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The output's objects; a record realign did not write stops the push, named."""
    from realign.io.errors import ReadError
    from realign.io.formats import FormatError
    from realign.io.read import read_objects

    try:
        stream = read_objects(path)
    except FormatError as e:
        raise UsageError(str(e)) from None
    for index, _line, obj in stream:
        if isinstance(obj, ReadError):
            raise UsageError(f"{path}: {obj}")
        if not is_realign_output(obj):
            raise UsageError(
                f"{path}: record {index} has no `realign` key; this is not a `realign run` output"
            )
        yield index, obj


def read_failures(output: Path, facts: CardFacts) -> None:
    path = output.with_name(f"{output.stem}.failures.jsonl")
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    facts.add_failure(json.loads(line))
                except (json.JSONDecodeError, AttributeError) as e:
                    raise UsageError(f"{path}:{n}: not a failures-file line ({e})") from None


def read_judge(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"--judge {path}: cannot read it as JSON ({e})") from None
    summary = judge_summary(data)
    if summary is None:
        raise UsageError(
            f"--judge {path}: not a `realign judge` output (no kind comparison|scores|multi_comparison)"
        )
    return summary


def scan(req: PushRequest, spool: Path | None) -> CardFacts:
    """Tally the output for the card and, unless `spool` is None, write it as one Parquet file
    (the `realign` key as a JSON text column, as `realign run` writes Parquet)."""
    from realign.io.parquet import ParquetSink

    facts = CardFacts()
    sink = ParquetSink(spool, spool.name, 2000, 32_000_000) if spool is not None else None
    try:
        for index, obj in _objects(req.output):
            facts.add(obj)
            if sink is not None:
                label = (index, str(obj.get("id")) if obj.get("id") is not None else None)
                if errors := sink.add(obj, label):
                    raise UsageError(f"{req.output}: {errors[0]}")
        if sink is not None and (errors := sink.close()):
            raise UsageError(f"{req.output}: {errors[0]}")
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if facts.records == 0:
        raise UsageError(f"{req.output}: no records to push")
    read_failures(req.output, facts)
    return facts


def write_shards(spool: Path, folder: Path, split: str, max_bytes: float) -> list[str]:
    """Cut the spooled file into shards of about `max_bytes` with one schema; their paths in
    the repository, `data/SPLIT-0000k-of-0000N.parquet`."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(spool)
    rows = pf.metadata.num_rows
    wanted = max(1, min(math.ceil(spool.stat().st_size / max_bytes), rows))
    per = max(1, math.ceil(rows / wanted))
    n = max(1, math.ceil(rows / per))  # no empty shard at the end
    names = [shard_name(split, k, n) for k in range(n)]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
    k, in_shard = 0, 0
    writer = pq.ParquetWriter(folder / names[0], pf.schema_arrow)
    try:
        for batch in pf.iter_batches(batch_size=max(1, min(per, 10_000))):
            start = 0
            while start < batch.num_rows:
                if in_shard == per and k + 1 < n:
                    writer.close()
                    k, in_shard = k + 1, 0
                    writer = pq.ParquetWriter(folder / names[k], pf.schema_arrow)
                take = min(batch.num_rows - start, per - in_shard if k + 1 < n else batch.num_rows)
                writer.write_batch(batch.slice(start, take))
                start, in_shard = start + take, in_shard + take
    finally:
        writer.close()
    return names


def _hub_error(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def push(req: PushRequest, say: Callable[[str], None]) -> PushResult:
    check_request(req)
    try:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    except ImportError:
        raise UsageError("realign push needs huggingface_hub: pip install 'realign[hub]'") from None
    token = token_or_fail()
    judge = read_judge(req.judge)
    with tempfile.TemporaryDirectory(prefix="realign-push-") as tmp:
        folder = Path(tmp)
        spool = None if req.card_only else folder / "all.parquet"
        facts = scan(req, spool)
        new_files = (
            [] if spool is None else write_shards(spool, folder, req.split, req.max_shard_mb * 1e6)
        )
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
        where = f"dataset repository {req.repo}"
        try:
            exists = api.repo_exists(req.repo, repo_type="dataset")
            remote = api.list_repo_files(req.repo, repo_type="dataset") if exists else []
        except Exception as e:  # httpx, OSError and the Hub's HTTP errors alike
            raise UsageError(f"cannot reach the Hub for {where}: {_hub_error(e)}") from None
        if req.card_only and not exists:
            raise UsageError(f"{where} does not exist; push the data first (without --card-only)")
        if exists and not req.card_only and not req.overwrite:
            raise UsageError(f"{where} exists; pass --overwrite to replace its {req.split!r} split")
        split_files = splits_of(remote)
        if not req.card_only:
            split_files[req.split] = new_files
        elif req.split not in split_files:
            raise UsageError(f"{where} has no {req.split!r} split under data/ to describe")
        license, source = license_of(req, facts)
        card = render_card(
            facts, repo=req.repo, license=license, license_source=source, split=req.split,
            splits=split_files, judge=judge,
        )  # fmt: skip
        (folder / "README.md").write_text(card, encoding="utf-8")
        stale = [p for p in splits_of(remote).get(req.split, []) if p not in new_files]
        ops: list[Any] = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
            for p in [*new_files, "README.md"]
        ]
        if not req.card_only:
            ops += [CommitOperationDelete(path_in_repo=p) for p in stale]
        created = False
        try:
            if not exists:
                api.create_repo(req.repo, repo_type="dataset", private=req.private)
                created = True
            elif req.private:
                api.update_repo_settings(req.repo, repo_type="dataset", private=True)
            say(f"uploading {len(ops)} file(s) to {req.repo} in one commit …")
            info = api.create_commit(
                req.repo,
                repo_type="dataset",
                operations=ops,
                commit_message=f"realign push: {'card' if req.card_only else req.split + ' split and card'}",
            )
        except Exception as e:
            done = (
                "the repository was created but is empty: rerun with --overwrite" if created
                else "no file was uploaded (the commit is all or nothing)"
            )  # fmt: skip
            raise UsageError(f"push to {where} failed: {_hub_error(e)}; {done}") from None
    return PushResult(
        url=str(getattr(info, "repo_url", "") or f"{api.endpoint}/datasets/{req.repo}"),
        created=created,
        uploaded=[*new_files, "README.md"],
        deleted=[] if req.card_only else stale,
        records=facts.records,
        license=license,
    )


def license_of(req: PushRequest, facts: CardFacts) -> tuple[str, str]:
    if req.license:
        return req.license, "given with --license"
    if found := facts.license():
        return found, "the `license` field every record carries"
    return "unknown", "not given: pass --license, e.g. --license apache-2.0"
