"""The linear head on embeddings and n-grams: training, calibration, its cached state.

Pure functions of the examples and their embeddings; the encoder is `encoder.py`'s.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from realign.criteria import CriteriaPack
from realign.stages.embedding.encoder import clean_text

# Bump when the training recipe changes, so caches made by an older recipe are rebuilt.
STATE_VERSION = 4
TOP_K = 3
# L2 regularisation strength of the logistic regression (sklearn's C): weak enough to fit
# ~20 examples per class, strong enough not to memorise their wording.
REG_C = 10.0
CV_FOLDS = 3


class Prediction(BaseModel):
    """One instruction's predicted task type.

    `confidence` is in [0, 1] (calibrated probability of `task_type`); `top` lists the best
    `TOP_K` (name, probability) pairs, best first, `top[0][0] == task_type`.
    """

    model_config = ConfigDict(frozen=True)

    task_type: str
    confidence: float = Field(ge=0.0, le=1.0)
    top: list[tuple[str, float]]


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
        train_texts = [texts[int(i)] for i in train_idx]
        test_texts = [texts[int(i)] for i in test_idx]
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
                **{f"terms_{f.kind}": f.terms for f in self.ngrams},  # type: ignore[arg-type]
                **{f"idf_{f.kind}": f.idf for f in self.ngrams},  # type: ignore[arg-type]
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
