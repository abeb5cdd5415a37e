"""`EmbeddingClassifier`: the encoder and a head trained for one criteria pack, cached."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realign.config import realign_home
from realign.criteria import CriteriaPack
from realign.stages.embedding.encoder import (
    DEFAULT_MODEL,
    ENCODE_BATCH,
    embed,
    load_encoder,
    model_id,
)
from realign.stages.embedding.head import (
    HeadState,
    Prediction,
    predictions_from_probs,
    softmax,
    train_head,
    training_set,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def state_path(pack: CriteriaPack, model: str = DEFAULT_MODEL, home: Path | None = None) -> Path:
    """Where the trained head for this pack and model is cached."""
    root = (home or realign_home()) / "classifier"
    return root / f"{pack.classifier_hash}-{model_id(model)}.npz"


class EmbeddingClassifier:
    """A trained classifier for one criteria pack. Build it with `for_pack`."""

    def __init__(self, encoder: SentenceTransformer, state: HeadState, cached: bool) -> None:
        self.encoder = encoder
        self.state = state
        self.from_cache = cached  # True when the head was loaded, not trained, this time

    @property
    def names(self) -> list[str]:
        return self.state.names

    @classmethod
    def for_pack(
        cls,
        pack: CriteriaPack,
        model: str = DEFAULT_MODEL,
        home: Path | None = None,
        encoder: SentenceTransformer | None = None,
        on_train: Callable[[str], None] | None = None,
    ) -> EmbeddingClassifier:
        """Load the cached head for `pack` and `model`, or train and cache it (a few seconds).

        `encoder` reuses an already loaded model; `on_train` is told (with a message) when
        training happens, e.g. to print "training the classifier for pack X".
        Raises ClassifierUnavailable when the extra or the model is missing.
        """
        enc = encoder if encoder is not None else load_encoder(model)
        mid = model_id(model)
        path = state_path(pack, model, home)
        state = HeadState.load(path, pack.classifier_hash, mid)
        if state is not None and state.names == pack.names():
            return cls(enc, state, cached=True)
        start = time.perf_counter()
        texts, y, names = training_set(pack)
        if on_train is not None:
            on_train(
                f"training the embedding classifier for criteria pack '{pack.name}' on "
                f"{len(texts)} examples (once per change of the pack; about a minute for the "
                "built-in pack on 2 cores)"
            )
        x = embed(enc, texts)
        state = train_head(texts, x, y, names, pack.classifier_hash, mid)
        state = HeadState(**{**state.__dict__, "train_seconds": time.perf_counter() - start})
        state.save(path)
        return cls(enc, state, cached=False)

    def probabilities(
        self, instructions: Sequence[str], batch_size: int = ENCODE_BATCH
    ) -> np.ndarray:
        """[len(instructions), classes] calibrated probabilities, columns in `self.names`."""
        x = embed(self.encoder, instructions, batch_size)
        return softmax(self.state.logits(x, instructions), self.state.temperature)

    def predict(
        self, instructions: Sequence[str], batch_size: int = ENCODE_BATCH
    ) -> list[Prediction]:
        """One `Prediction` per instruction, in order. Batch many instructions per call.

        The caller applies its own `min_confidence` to `Prediction.confidence`.
        """
        if not instructions:
            return []
        return predictions_from_probs(self.probabilities(instructions, batch_size), self.names)


def describe(clf: EmbeddingClassifier) -> dict[str, Any]:
    """Facts about a classifier for logs and reports."""
    return {
        "model": clf.state.model_id,
        "classes": len(clf.names),
        "pack_hash": clf.state.pack_hash,
        "temperature": round(clf.state.temperature, 4),
        "from_cache": clf.from_cache,
        "train_seconds": round(clf.state.train_seconds, 3),
    }
