"""Does the answer survive the rewrite? GSM8K through `realign run --force`, and a constructed
Open-Platypus-style multiple-choice set through the filter.

Part 1 runs the real command on the first `--limit` GSM8K test items, as a user would:

    realign run gsm8k.jsonl -o out.jsonl --fields instruction=question,response=answer \\
        --force --filter-preset gsm8k --limit N  <options after -- , default: --backend local>

Each row is given `category: math_puzzles` (ReAlign rewrites GSM8K with its math format;
`--classify` lets the model type them instead). It prints the records, the written rewrites,
the share of written rewrites whose last `#### N` equals the original's (must be 100%), the same
share over every output record, what was kept and by which rule, failures and seconds per record.

Part 2 builds multiple-choice items with letter answers A–E (a bare letter, "(B)", or an
explanation that ends "the answer is (B).") and rewrites in the phrasings answers use, each
once with a changed letter and once with the original's, and runs `realign.stages.filter.decide` with
the `open-platypus` and `default` presets: every changed letter must be rejected.

    .venv/bin/python benchmarks/answer_survival.py --limit 40
    .venv/bin/python benchmarks/answer_survival.py --limit 40 -- --model gpt-4o-mini
    .venv/bin/python benchmarks/answer_survival.py --skip-gsm8k
    .venv/bin/python benchmarks/answer_survival.py --limit 1319 --work runs/gsm8k  # resumable

The embedded model's server is started on `REALIGN_LOCAL_PORT` (default here: 8771).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from realign.metrics import GSM8K, normalize_number
from realign.stages.filter import decide

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TEST = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
REALIGN = Path(sys.executable).with_name("realign")
LETTERS = "ABCDE"


def final(text: str) -> str | None:
    found = GSM8K.findall(text)
    return found[-1].strip() if found else None


def same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    na, nb = normalize_number(a), normalize_number(b)
    return na == nb if na is not None and nb is not None else a == b


def share(hits: int, total: int) -> str:
    return f"{hits}/{total} = {hits / total:.1%}" if total else "-"


def kept_reason(rec: dict) -> str:
    u = rec["realign"]["units"][0]
    return (u["filter"]["reason"] if u.get("filter") else u.get("reason", ""))[:150]


def kept_by(rec: dict) -> str:
    """The rule or reason that kept a unit's original."""
    u = rec["realign"]["units"][0]
    if u.get("filter"):
        return u["filter"]["rule"]
    reason = u.get("reason", "")
    if reason.startswith("truncated"):
        return "truncated"
    if "does not fit" in reason:
        return "format_does_not_fit"
    return reason[:40] or "?"


def gsm8k(args: argparse.Namespace) -> int:
    rows = []
    with args.data.open(encoding="utf-8") as f:
        for line in f:
            if len(rows) == args.limit:
                break
            row = json.loads(line)
            if not args.classify:
                row["category"] = "math_puzzles"
            rows.append(row)
    # --work DIR keeps the run's files: the same command again resumes where it stopped (the
    # whole test set takes hours with the embedded model on 2 cores).
    where = contextlib.nullcontext(str(args.work)) if args.work else tempfile.TemporaryDirectory()
    with where as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        src, out = Path(tmp) / "gsm8k.jsonl", Path(tmp) / "out.jsonl"
        before = len(out.read_text(encoding="utf-8").splitlines()) if out.exists() else 0
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        run_args = args.run_args or ["--backend", "local"]
        cmd = [str(REALIGN), "run", str(src), "-o", str(out)]
        cmd += ["--fields", "instruction=question,response=answer", "--force"]
        cmd += ["--filter-preset", args.preset, "--no-cache", *run_args]
        env = {**os.environ, "REALIGN_LOCAL_PORT": os.environ.get("REALIGN_LOCAL_PORT", "8771")}
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        if done.returncode not in (0, 1):  # 1: some records failed (counted below)
            print(done.stdout, done.stderr, sep="\n")
            return done.returncode
        written = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        if args.keep_output:
            args.keep_output.write_text(out.read_text(encoding="utf-8"), encoding="utf-8")
        fails = Path(tmp) / "out.failures.jsonl"
        failed = len(fails.read_text(encoding="utf-8").splitlines()) if fails.exists() else 0

    gold = {r["question"]: final(r["answer"]) for r in rows}
    statuses = Counter(r["realign"]["status"] for r in written)
    rewritten = [r for r in written if r["realign"]["status"] == "rewritten"]
    intact_rw = sum(same(final(r["answer"]), gold[r["question"]]) for r in rewritten)
    intact_all = sum(same(final(r["answer"]), gold[r["question"]]) for r in written)
    kept = Counter(kept_by(r) for r in written if r["realign"]["status"] == "kept")
    print(f"$ realign run <GSM8K test, first {len(rows)}> ... " + " ".join(cmd[5:]))
    print(
        f"GSM8K test ({args.data.name}): {len(rows)} records in, {len(written)} written, "
        f"{failed} failed; task type "
        + ("classified by the model" if args.classify else "math_puzzles (given)")
    )
    print(f"  statuses                              {dict(statuses)}")
    print(f"  written rewrites                      {len(rewritten)}")
    print(f"  `#### N` intact among written rewrites {share(intact_rw, len(rewritten))}")
    print(f"  `#### N` intact among all output       {share(intact_all, len(written))}")
    print(f"  kept, by rule                         {dict(kept.most_common())}")
    for rule in kept:  # one reason per rule, to read what the model wrote
        why = next(
            kept_reason(r)
            for r in written
            if r["realign"]["status"] == "kept" and kept_by(r) == rule
        )
        print(f"    e.g. {rule}: {why}")
    now = max(1, len(written) - before)
    print(
        f"  time                                  {elapsed:.1f} s for {len(written) - before} "
        f"records done now ({before} resumed), {elapsed / now:.1f} s/record"
    )
    return 0 if intact_rw == len(rewritten) else 2


# ---------------------------------------------------------------- multiple choice

QUESTION = (
    "A ball is dropped from rest. Which quantity increases as it falls?\n"
    "A. its mass\nB. its speed\nC. its charge\nD. its volume\nE. its colour"
)
# Rewrites in the phrasings answers use; {x} is the letter chosen, {o} the original's.
TEMPLATES = [
    "**Final answer:** ({x})\n\nA careful reading shows a force acts on the ball all the way.",
    "The correct answer is {x}. Option {o} is a common trap, as a quick check shows.",
    "Option {o} is tempting, but the right answer is ({x}): gravity speeds a ball up.",
    "({x}) is correct, since a falling body gains speed at 9.8 m/s every second.",
    "I would choose {x}. A quick check confirms it: a dropped ball speeds up.",
    "({x}) fits best. A quick check confirms it.",
    "{x}",
    "Answer: {x}\n\nExplanation: a simple comparison of the options shows it.",
    "**{x}.** This is the only option that grows while a ball falls.",
    "Given: a ball falls from rest.\nFind: which quantity grows.\n1. v = g t grows with t.\n"
    "**Final answer:** ({x})",
]


def originals(letter: str) -> list[str]:
    return [
        letter,
        f"({letter})",
        "Gravity accelerates the ball, so its speed grows while mass, charge, volume and "
        f"colour stay the same. Therefore, the answer is ({letter}).",
    ]


def multiple_choice() -> int:
    print("\nOpen-Platypus-style multiple choice (constructed): letters A-E as answers")
    bad = 0
    for preset in ("open-platypus", "default"):
        changed = rejected = same_letter = passed = 0
        rules: Counter[str] = Counter()
        same_kept: Counter[str] = Counter()
        leaked: list[str] = []
        for o in LETTERS:
            for original in originals(o):
                for t in TEMPLATES:
                    for x in LETTERS:
                        d = decide(
                            QUESTION,
                            original,
                            t.format(x=x, o=o),
                            "exam_problem_solving_tutor",
                            preset,
                        )
                        if x != o:
                            changed += 1
                            rejected += d.keep_original
                            rules[d.rule] += d.keep_original
                            if not d.keep_original:
                                leaked.append(f"{original!r} -> {t.format(x=x, o=o)!r}")
                        else:
                            same_letter += 1
                            passed += not d.keep_original
                            same_kept[d.rule] += d.keep_original
        print(f"  --filter-preset {preset}")
        print(f"    changed letter rejected       {share(rejected, changed)}  by {dict(rules)}")
        print(
            f"    same letter passed            {share(passed, same_letter)}"
            f"  kept by {dict(+same_kept)}"
        )
        for line in leaked[:5]:
            print(f"    NOT rejected: {line}")
        bad += changed - rejected
    return 0 if bad == 0 else 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=GSM8K_TEST, help="GSM8K-style JSONL")
    ap.add_argument("--limit", type=int, default=40, help="first N records (test set: 1,319)")
    ap.add_argument("--preset", default="gsm8k", help="--filter-preset for the GSM8K run")
    ap.add_argument("--classify", action="store_true", help="let the model type each record")
    ap.add_argument("--skip-gsm8k", action="store_true", help="only the multiple-choice part")
    ap.add_argument("--keep-output", type=Path, help="also write the run's output here")
    ap.add_argument(
        "--work", type=Path, help="keep the run's files here; the same command again resumes"
    )
    ap.add_argument("run_args", nargs="*", help="after --: passed to `realign run`")
    args = ap.parse_args()
    code = 0 if args.skip_gsm8k else gsm8k(args)
    return code or multiple_choice()


if __name__ == "__main__":
    raise SystemExit(main())
