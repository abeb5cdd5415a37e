"""Hugging Face datasets as input: `hf:NAME[:SPLIT]` (or `hf:NAME:CONFIG:SPLIT`) streams a Hub
dataset, and a directory saved with `datasets.save_to_disk` (optionally `DIR:SPLIT`) is read
from disk; both need the `hf` extra. Hugging Face datasets are input only: write `.parquet`
for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from realign.io.formats import FormatError
from realign.io.objects import ObjectStream, strip_nulls


def _hf_gen(dataset: Any) -> Callable[[ObjectStream], Iterator[tuple[int, int | None, Any]]]:
    def gen(s: ObjectStream) -> Iterator[tuple[int, int | None, Any]]:
        for index, row in enumerate(dataset):
            s.done += 1
            yield index, None, strip_nulls(dict(row))

    return gen


_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def _split_hf_dir(spec: str) -> tuple[Path, str | None] | None:
    """`DIR` or `DIR:SPLIT` when DIR was saved with `datasets.save_to_disk`."""
    candidates: list[tuple[str, str | None]] = [(spec, None)]
    if ":" in spec:
        folder, named = spec.rsplit(":", 1)
        candidates.append((folder, named))
    for folder, split in candidates:
        p = Path(folder)
        if p.is_dir() and any((p / n).exists() for n in _HF_MARKERS):
            return p, split
    return None


def is_hf_source(spec: str | os.PathLike[str]) -> bool:
    s = str(spec)
    return s.startswith("hf:") or _split_hf_dir(s) is not None


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise FormatError(
            "reading a Hugging Face dataset needs the `hf` extra: pip install 'realign[hf]'"
        ) from None
    return datasets


def _splits_of(datasets: Any, name: str, config: str | None) -> list[str]:
    """The splits a dataset has ([] when that cannot be found out, e.g. offline)."""
    try:
        return list(datasets.get_dataset_split_names(name, config))
    except Exception:  # offline, unknown name: the caller reports the first error
        return []


def open_hf(spec: str, max_record_bytes: int) -> ObjectStream:
    datasets = _import_datasets()
    found = _split_hf_dir(spec.removeprefix("hf:"))  # hf:DIR[:SPLIT] is read from disk too
    if found is None:
        parts = spec[3:].split(":")
        config: str | None
        split: str | None
        name, config, split = parts[0], None, "train"
        if len(parts) == 2:
            split = parts[1]
        elif len(parts) == 3:
            config, split = parts[1], parts[2]
        elif len(parts) > 3:
            raise FormatError(f"{spec}: use hf:NAME[:SPLIT] or hf:NAME:CONFIG:SPLIT")
        try:
            ds = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as e:  # offline, unknown name, bad split: many types
            # Only a split error asks the hub again: offline, every hub call is retried with
            # back-off for tens of seconds, and the first error already says why.
            about_split = "split" in str(e).lower()
            splits = _splits_of(datasets, name, config) if about_split else []
            if splits and split not in splits:
                raise FormatError(
                    f"{spec}: no split '{split}'; this dataset has {', '.join(splits)} "
                    f"(hf:{name}:SPLIT)"
                ) from None
            raise FormatError(
                f"{spec}: cannot open the Hugging Face dataset ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}). Check the name "
                "and the network, or save it with datasets' save_to_disk and pass the folder"
            ) from None
        return ObjectStream(spec, _hf_gen(ds), None, "rows", max_record_bytes)
    folder, split = found
    ds = datasets.load_from_disk(str(folder))
    if split is not None and not isinstance(ds, datasets.DatasetDict):
        raise FormatError(
            f"{spec}: {folder} holds one dataset, no splits; pass {folder} without ':{split}'"
        )
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None:
            split = "train" if "train" in splits else (splits[0] if len(splits) == 1 else None)
        if split not in splits:
            problem = "choose a split" if split is None else f"no split '{split}'"
            raise FormatError(
                f"{spec}: {problem}; {folder} has {', '.join(splits)} (pass {folder}:SPLIT)"
            )
        ds = ds[split]
    return ObjectStream(spec, _hf_gen(ds), len(ds), "rows", max_record_bytes)
