"""Benchmark the offline embedding classifier on ReAlign's labelled task-classification set.

Prints accuracy, macro-F1, the most confused pairs and a per-class table on
`../shared/data/realign/task_classifier_dev.json` (143 instructions; the method's fine-tuned
LLaMA-2-13B scores 78.32%), the cross-validated accuracy on the pack's own examples, the
training time, the cold start of a fresh process with the cached state, and instructions/s on
2 CPU threads after warm-up.

    .venv/bin/python benchmarks/classifier.py
    .venv/bin/python benchmarks/classifier.py --pack path/to/pack --json results.json
    .venv/bin/python benchmarks/classifier.py --dev benchmarks/data/own_heldout.json  # 2nd set

Diagnostics (what limits the accuracy: the examples or the model?):

    # ReAlign's own labelled training set (public, datasets/classification/ in GAIR-NLP/ReAlign)
    # as a second measurement set, then as extra training data, then as the only training data
    .venv/bin/python benchmarks/classifier.py --dev task_classifier_train_dataset.json
    .venv/bin/python benchmarks/classifier.py --train-extra task_classifier_train_dataset.json
    .venv/bin/python benchmarks/classifier.py --train-extra task_classifier_train_dataset.json \
        --no-pack-examples
    # another sentence-transformers model from a local folder
    .venv/bin/python benchmarks/classifier.py --model path/to/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from realign.criteria import CriteriaPack, load_pack

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "realign" / "task_classifier_dev.json"
BASELINE_13B = 0.7832

COLD_START_SCRIPT = """
import sys, time
from pathlib import Path
from realign.criteria import load_pack
from realign.stages.embedding import EmbeddingClassifier
clf = EmbeddingClassifier.for_pack(load_pack(sys.argv[1]), model=sys.argv[2], home=Path(sys.argv[3]))
assert clf.from_cache, "cold start expected a cached state"
clf.predict(["Write a haiku about rain."])
"""


def per_class(gold: list[str], pred: list[str], names: list[str]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for n in names:
        tp = sum(g == n and p == n for g, p in zip(gold, pred, strict=True))
        fp = sum(g != n and p == n for g, p in zip(gold, pred, strict=True))
        fn = sum(g == n and p != n for g, p in zip(gold, pred, strict=True))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        table[n] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return table


def cold_start_seconds(pack: str, model: str, home: Path, runs: int = 3) -> float:
    """Best of `runs` fresh processes: interpreter start, imports, model and cached state, one
    prediction."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", COLD_START_SCRIPT, pack, model, str(home)],
            check=True,
            capture_output=True,
        )
        best = min(best, time.perf_counter() - start)
    return best


def with_extra_examples(pack: CriteriaPack, extra: Path | None, only: bool) -> CriteriaPack:
    """The pack with labelled items added to (or, with `only`, replacing) its examples: a
    throwaway pack for measurement, trained in a temporary home like any other."""
    if extra is None:
        if only:
            raise SystemExit("--no-pack-examples needs --train-extra")
        return pack
    by_type: dict[str, list[str]] = {n: [] for n in pack.names()}
    for i, it in enumerate(json.loads(extra.read_text(encoding="utf-8"))):
        if it["category"] not in by_type:
            raise SystemExit(f"{extra}: item {i}: category {it['category']!r} is not in the pack")
        by_type[it["category"]].append(it["instruction"])
    criteria = {
        n: c.model_copy(update={"examples": (by_type[n] if only else [*c.examples, *by_type[n]])})
        for n, c in pack.criteria.items()
    }
    return CriteriaPack(name=f"{pack.name}+{extra.stem}", criteria=criteria)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pack", default="realign", help="criteria pack name or folder")
    ap.add_argument("--model", default=None, help="embedding model id or local folder")
    ap.add_argument("--dev", type=Path, default=DEV, help="labelled set: [{instruction, category}]")
    ap.add_argument(
        "--train-extra",
        type=Path,
        default=None,
        help="labelled items [{instruction, category}] added to the pack's examples for training",
    )
    ap.add_argument(
        "--no-pack-examples",
        action="store_true",
        help="with --train-extra: train on those items only (each type keeps its description)",
    )
    ap.add_argument("--throughput-n", type=int, default=1000, help="instructions timed")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    import torch

    from realign.stages import embedding as ec

    torch.set_num_threads(args.threads)
    model = args.model or ec.DEFAULT_MODEL
    pack = with_extra_examples(load_pack(args.pack), args.train_extra, args.no_pack_examples)
    items = json.loads(args.dev.read_text(encoding="utf-8"))
    instructions = [it["instruction"] for it in items]
    gold = [it["category"] for it in items]
    unknown = sorted({g for g in gold if g not in pack})
    if unknown:
        print(f"warning: {args.dev}: labels not in pack '{pack.name}': {unknown}")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        encoder = ec.load_encoder(model)
        t0 = time.perf_counter()
        clf = ec.EmbeddingClassifier.for_pack(pack, model=model, home=home, encoder=encoder)
        train_s = time.perf_counter() - t0
        assert not clf.from_cache
        n_examples = sum(len(pack[n].examples) for n in pack.names())

        # Cross-validated accuracy on the pack's own examples (a second, independent view).
        texts, y, names = ec.training_set(pack)
        x = ec.embed(encoder, texts)
        folds = min(ec.CV_FOLDS, int(np.bincount(y).min()))
        oof = ec.out_of_fold_logits(texts, x, y, len(names), folds)
        cv_acc = float((oof.argmax(axis=1) == y).mean())

        preds = clf.predict(instructions)
        pred = [p.task_type for p in preds]
        conf = np.array([p.confidence for p in preds])
        correct = np.array([p == g for p, g in zip(pred, gold, strict=True)])
        acc = float(correct.mean())
        table = per_class(gold, pred, sorted(set(gold)))
        macro_f1 = float(np.mean([r["f1"] for r in table.values()]))
        top3 = float(
            np.mean([g in [n for n, _ in p.top] for p, g in zip(preds, gold, strict=True)])
        )

        # Throughput after warm-up: the dev instructions repeated to `throughput_n`.
        batch = (instructions * (args.throughput_n // len(instructions) + 1))[: args.throughput_n]
        clf.predict(batch[:128])
        # Best of 3: the figure is the machine's capacity, not the noise of whatever else
        # shares its 2 cores at the time (the median is printed too).
        rates = []
        for _ in range(3):
            t0 = time.perf_counter()
            clf.predict(batch)
            rates.append(len(batch) / (time.perf_counter() - t0))
        ips, ips_median = max(rates), float(np.median(rates))

        # The fresh process loads the pack by name: only the unmodified pack has its state there.
        cold = cold_start_seconds(args.pack, model, home) if args.train_extra is None else None

    confused = Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p)
    print(
        f"model {ec.model_id(model)}  pack {pack.name} ({len(pack.names())} classes, "
        f"{n_examples} examples)  temperature {clf.state.temperature:.3f}"
    )
    print(f"\ndev set {args.dev.name}: {len(items)} instructions")
    # The 13B figure is ReAlign's, on its own set only.
    baseline = f"   (fine-tuned LLaMA-2-13B: {BASELINE_13B:.2%})" if args.dev == DEV else ""
    print(f"  accuracy      {acc:.2%}{baseline}")
    print(f"  macro-F1      {macro_f1:.2%}   (over the {len(table)} classes present)")
    print(f"  top-3 hit     {top3:.2%}")
    print(
        f"  mean confidence when right {conf[correct].mean():.3f}, "
        f"when wrong {conf[~correct].mean() if (~correct).any() else float('nan'):.3f}"
    )
    for thr in (0.3, 0.5, 0.7):
        keep = conf >= thr
        kept_acc = correct[keep].mean() if keep.any() else float("nan")
        print(f"  confidence >= {thr}: {keep.mean():.0%} kept, accuracy {kept_acc:.2%}")
    print(f"pack examples, {folds}-fold cross-validated accuracy: {cv_acc:.2%}")
    print("\nmost confused (gold -> predicted: count)")
    for (g, p), c in confused.most_common(12):
        print(f"  {g} -> {p}: {c}")
    print(f"\n{'class':34} {'n':>3} {'prec':>6} {'rec':>6} {'f1':>6}")
    for n, r in sorted(table.items(), key=lambda kv: (kv[1]["f1"], kv[0])):
        print(
            f"{n:34} {int(r['support']):>3} {r['precision']:6.2f} {r['recall']:6.2f} {r['f1']:6.2f}"
        )
    print(f"\ntraining (embed examples + fit + calibrate): {train_s:.2f} s")
    if cold is not None:
        print(f"cold start (fresh process, cached state, one prediction): {cold:.2f} s")
    print(
        f"throughput ({args.threads} threads, warm, best of 3): {ips:.0f} instructions/s "
        f"(median {ips_median:.0f})"
    )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": ec.model_id(model),
                    "pack": pack.name,
                    "accuracy": acc,
                    "macro_f1": macro_f1,
                    "top3": top3,
                    "cv_accuracy": cv_acc,
                    "train_seconds": train_s,
                    "cold_start_seconds": cold,
                    "instructions_per_second": ips,
                    "per_class": table,
                    "confused": [[g, p, c] for (g, p), c in confused.most_common()],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
