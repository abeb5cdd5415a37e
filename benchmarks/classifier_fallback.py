"""Accuracy of `realign classify --method embedding` with its LLM fallback, end to end.

The labelled set (ReAlign's 143 instructions by default) is written as an Alpaca file without
its labels, typed by the real command as a user runs it, and scored against the labels:
overall, and for the units the embedding classifier kept against those it handed to the LLM
(confidence below `--min-confidence`). The LLM is whatever realign would use: none with no key
and no backend given (the unsure units become `default`), the embedded SmolLM2 with
`-- --backend local`, a hosted model with `-- --model gpt-4o-mini` and `OPENAI_API_KEY`, or any
OpenAI-compatible `-- --base-url URL`. Options after `--` go to `realign classify` as they are.

    .venv/bin/python benchmarks/classifier_fallback.py --min-confidence 0.7 -- --backend local
    .venv/bin/python benchmarks/classifier_fallback.py --min-confidence 0.7 -- --model gpt-4o-mini
    .venv/bin/python benchmarks/classifier_fallback.py --min-confidence 0.7 --no-llm

`--no-llm` makes no LLM call: the unsure units are typed `default`, as realign does when no
LLM is configured. Every run also prints how the embedding's own guess and `default` would
have scored on the unsure units, to compare with the LLM's answers.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "realign" / "task_classifier_dev.json"
REALIGN = Path(sys.executable).with_name("realign")
UNSURE = re.compile(r"embedding classifier unsure \((\w+), confidence")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dev", type=Path, default=DEV, help="labelled set: [{instruction, category}]")
    ap.add_argument("--min-confidence", type=float, default=0.5)
    ap.add_argument(
        "--no-llm", action="store_true", help="score the fallback as `default` (no LLM call)"
    )
    ap.add_argument("classify_args", nargs="*", help="after --: passed to `realign classify`")
    args = ap.parse_args()

    items = json.loads(args.dev.read_text(encoding="utf-8"))
    gold = [it["category"] for it in items]
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.jsonl", Path(tmp) / "typed.jsonl"
        with src.open("w", encoding="utf-8") as f:
            for it in items:  # no label: the input must not tell the classifier the answer
                row = {"instruction": it["instruction"], "input": "", "output": "(unused)"}
                f.write(json.dumps(row) + "\n")
        # With --no-llm the threshold is 0, so nothing is sent anywhere; the unsure units are
        # found from the recorded confidences and scored as `default` below.
        threshold = 0.0 if args.no_llm else args.min_confidence
        cmd = [
            str(REALIGN),
            "classify",
            str(src),
            "-o",
            str(out),
            "--method",
            "embedding",
            "--min-confidence",
            str(threshold),
            "--no-cache",
            *args.classify_args,
        ]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            print(done.stdout, done.stderr, sep="\n")
            return done.returncode
        typed = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]

    units = [t["realign"]["units"][0] for t in typed]
    pred = [u["task_type"] for u in units]
    source = [u["task_source"] for u in units]
    # The embedding's own guess for every unit: its answer when it kept the unit, else the
    # name in the recorded reason ("embedding classifier unsure (NAME, confidence ...)").
    guess = [
        p if s == "embedding" else (m.group(1) if (m := UNSURE.search(u["task_reason"])) else None)
        for p, s, u in zip(pred, source, units, strict=True)
    ]
    # Handed over: typed by the fallback (an LLM or `default`), or, with --no-llm (threshold 0
    # in the command), kept by the embedding below the threshold asked for.
    unsure = [
        s != "embedding" or u["task_confidence"] < args.min_confidence
        for s, u in zip(source, units, strict=True)
    ]
    if args.no_llm:  # what realign does with no LLM configured
        pred = ["default" if u else p for p, u in zip(pred, unsure, strict=True)]
    right = [p == g for p, g in zip(pred, gold, strict=True)]

    def share(flags: list[bool]) -> str:
        return f"{sum(flags)}/{len(flags)} = {sum(flags) / len(flags):.2%}" if flags else "-"

    print(
        f"realign classify --method embedding --min-confidence {args.min_confidence} "
        + (" ".join(args.classify_args) or "(default backend)")
        + ("  [--no-llm: unsure units typed default]" if args.no_llm else "")
    )
    print(f"labelled set {args.dev.name}: {len(items)} instructions, {elapsed:.1f} s")
    print(f"  accuracy                         {share(right)}")
    sure_right = [r for r, u in zip(right, unsure, strict=True) if not u]
    print(f"  confident units (embedding)      {share(sure_right)}")
    handed = [i for i, u in enumerate(unsure) if u]
    print(f"  unsure units ({len(handed)}), typed by the fallback:")
    if not args.no_llm:
        by = ", ".join(f"{k} {v}" for k, v in sorted(Counter(source[i] for i in handed).items()))
        print(f"    the fallback's answer ({by or '-'}){share([right[i] for i in handed]):>14}")
    print(f"    the embedding's own guess      {share([guess[i] == gold[i] for i in handed])}")
    print(f"    default                        {share([gold[i] == 'default' for i in handed])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
