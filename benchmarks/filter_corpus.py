"""Never worse: a labelled corpus of rewrites through the real `realign run`, scored per kind.

Each case of the corpus is an (instruction, original, task type, rewrite) with a label: one of
eight kinds of bad rewrite (the original must be kept) or `good` (the rewrite must be
accepted). The cases become one items-format input (the task type as `category`, the evidence
as `evidence` on the question's turn, so no classify call and no search happens) and go
through the real command in process: `realign run --retrieval none --no-cache` with a scripted
backend that answers each record's rewrite request with the case's rewrite (and the case's
finish reason, `stop` unless it says `length`). The output's `realign` metadata says whether
the original was kept and by which rule. A `length` case's answer is the complete JSON object
(it validates) reported with finish reason `length`, as a model cut off at the end of its
rewrite: only a pipeline that keeps the finish reason can tell.

    python benchmarks/filter_corpus.py                       # the tests' corpus
    python benchmarks/filter_corpus.py --corpus held_out/    # a file or a folder of .jsonl
    python benchmarks/filter_corpus.py --filter-preset open-platypus --misses 0
    python benchmarks/filter_corpus.py --notes     # each miss with why the case is bad/good

A corpus line (JSON Lines; a folder is read file by file, sorted):

    {"id": "verdict-03", "kind": "verdict", "expect": "keep", "task_type": "fact_verification",
     "instruction": "...", "original": "...", "rewrite": "...",
     "evidence": [{"title": "...", "snippet": "...", "url": "..."}],   # optional
     "finish_reason": "length",                                          # optional, "stop"
     "note": "why the rewrite is bad (or good)"}

`kind` is one of KINDS (bad: expect `keep`) or `good` (expect `accept`); `task_type` a type of
the `realign` pack whose criterion rewrites (`rewrite: yes`). A record that fails or is
skipped is neither caught nor accepted: it is counted and listed apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realign.llm.base import BackendError, ChatRequest, ChatResponse
from realign.llm.fake import FakeBackend

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT / "tests" / "data" / "filter_corpus"
KINDS = ("verdict", "answer", "code", "truncation", "meta", "unanswered", "invented", "language")
GOOD = "good"
EXPECT = {**dict.fromkeys(KINDS, "keep"), GOOD: "accept"}
FINISH_REASONS = ("stop", "length")
BACKEND_NAME = "filter-corpus"
REQUIRED = ("id", "kind", "expect", "task_type", "instruction", "original", "rewrite", "note")


class CorpusError(ValueError):
    """A corpus line that is not a usable case (names the file, line and field)."""


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    expect: str
    task_type: str
    instruction: str
    original: str
    rewrite: str
    note: str
    evidence: tuple[dict[str, str], ...] = ()
    finish_reason: str = "stop"

    @property
    def bad(self) -> bool:
        return self.kind != GOOD

    def to_item(self) -> dict[str, Any]:
        """The case as a ReAlign items record: task type and evidence given in the input."""
        human: dict[str, Any] = {
            "from": "human",
            "value": self.instruction,
            "category": self.task_type,
        }
        if self.evidence:
            human["evidence"] = [dict(e) for e in self.evidence]
        return {"id": self.id, "items": [human, {"from": "gpt", "value": self.original}]}


def _case(obj: Any, where: str, rewriting_types: set[str]) -> Case:
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object")
    for key in REQUIRED:
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise CorpusError(f"{where}: field {key!r} must be a non-empty string")
    kind, expect = obj["kind"], obj["expect"]
    if kind not in EXPECT:
        raise CorpusError(f"{where}: kind {kind!r} is not one of {', '.join(EXPECT)}")
    if expect != EXPECT[kind]:
        raise CorpusError(f"{where}: kind {kind!r} expects {EXPECT[kind]!r}, not {expect!r}")
    if obj["task_type"] not in rewriting_types:
        raise CorpusError(
            f"{where}: task_type {obj['task_type']!r} is not a type of the realign pack "
            "whose criterion says rewrite: yes"
        )
    finish = obj.get("finish_reason", "stop")
    if finish not in FINISH_REASONS:
        raise CorpusError(f"{where}: finish_reason must be one of {', '.join(FINISH_REASONS)}")
    evidence = obj.get("evidence") or []
    if not isinstance(evidence, list) or not all(
        isinstance(e, dict) and isinstance(e.get("snippet"), str) for e in evidence
    ):
        raise CorpusError(f"{where}: evidence must be a list of {{title, snippet, url}} objects")
    return Case(
        id=obj["id"],
        kind=kind,
        expect=expect,
        task_type=obj["task_type"],
        instruction=obj["instruction"],
        original=obj["original"],
        rewrite=obj["rewrite"],
        note=obj["note"],
        evidence=tuple({k: str(v) for k, v in e.items()} for e in evidence),
        finish_reason=finish,
    )


def rewriting_types(pack: str = "realign") -> set[str]:
    from realign.criteria import load_pack

    loaded = load_pack(pack)
    return {name for name, crit in loaded.criteria.items() if crit.rewrite}


def corpus_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise CorpusError(f"{path}: no .jsonl file in this folder")
        return files
    if not path.is_file():
        raise CorpusError(f"{path}: no such file or folder")
    return [path]


def load_corpus(path: Path | str = DEFAULT_CORPUS) -> list[Case]:
    """Every case of a .jsonl file or of a folder's .jsonl files; ids must be unique."""
    types = rewriting_types()
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for file in corpus_files(Path(path)):
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{file.name}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{where}: not JSON: {e}") from e
            case = _case(obj, where, types)
            if case.id in seen:
                raise CorpusError(f"{where}: id {case.id!r} already used at {seen[case.id]}")
            seen[case.id] = where
            cases.append(case)
    return cases


# ---------------------------------------------------------------- the scripted backend


class CorpusBackend(FakeBackend):
    """Answers each record's rewrite request with its case's rewrite and finish reason. Any
    other request (a classify call, a search-less stage the run should not need) is an error,
    so a case that does not reach the filter the way the corpus says shows as a failure."""

    def __init__(self, cases: list[Case]) -> None:
        super().__init__(self._answer, model="filter-corpus")
        self.cases = {c.id: c for c in cases}

    def _answer(self, request: ChatRequest) -> str:
        case = self.cases.get(request.record_id or "")
        if case is None or request.stage != "rewrite":
            raise BackendError(
                f"the corpus backend only answers rewrite requests of corpus cases, got stage "
                f"{request.stage!r} for record {request.record_id!r}",
                retryable=False,
            )
        return json.dumps(
            {
                "reasoning": "Reformatted to the task type's criterion.",
                "format_fits": True,
                "response": case.rewrite,
            }
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        resp = await super().chat(request)
        case = self.cases.get(request.record_id or "")
        if case is None or case.finish_reason == "stop":
            return resp
        return resp.model_copy(update={"finish_reasons": [case.finish_reason] * len(resp.texts)})


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class Outcome:
    case: Case
    status: str  # rewritten | kept | skipped | failed | missing
    rule: str  # the filter rule (or what kept / skipped / failed it)
    reason: str

    @property
    def hit(self) -> bool:
        """Caught (a bad case kept its original) or accepted (a good case was rewritten)."""
        return self.status == ("kept" if self.case.bad else "rewritten")

    @property
    def broken(self) -> bool:
        """Never reached a decision: failed, skipped or not in the output."""
        return self.status not in ("kept", "rewritten")


def _kept_by(unit: dict[str, Any]) -> str:
    if unit.get("filter"):
        return str(unit["filter"]["rule"])
    reason = str(unit.get("reason", ""))
    if reason.startswith("truncated"):
        return "truncated"
    if "does not fit" in reason:
        return "format_does_not_fit"
    return reason.split(":")[0][:40] or "?"


def _outcome(case: Case, rec: dict[str, Any] | None, failure: dict[str, Any] | None) -> Outcome:
    if failure is not None:
        return Outcome(case, "failed", f"failed:{failure.get('stage')}", str(failure["error"]))
    if rec is None:
        return Outcome(case, "missing", "missing", "neither in the output nor in the failures")
    meta = rec.get("realign") or {}
    units = meta.get("units") or [{}]
    status = str(meta.get("status", "?"))
    unit = units[0]
    if status == "kept":
        why = (unit.get("filter") or {}).get("reason") or unit.get("reason", "")
        return Outcome(case, status, _kept_by(unit), str(why))
    if status == "rewritten":
        return Outcome(case, status, "passed", str((unit.get("filter") or {}).get("reason", "")))
    return Outcome(case, status, status, str(meta.get("reason", "")))


@contextlib.contextmanager
def _home(path: Path) -> Iterator[None]:
    """A throw-away REALIGN_HOME: the run reads no user config and writes no user cache."""
    before = os.environ.get("REALIGN_HOME")
    os.environ["REALIGN_HOME"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("REALIGN_HOME", None)
        else:
            os.environ["REALIGN_HOME"] = before


def run_corpus(cases: list[Case], *, preset: str = "default") -> list[Outcome]:
    """Every case through `realign run` (in process) with the corpus backend."""
    from realign import run
    from realign.llm.registry import register_backend

    backend = CorpusBackend(cases)
    register_backend(BACKEND_NAME, lambda settings: backend, replace=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "corpus.jsonl", Path(tmp) / "out.jsonl"
        src.write_text(
            "".join(json.dumps(c.to_item(), ensure_ascii=False) + "\n" for c in cases),
            encoding="utf-8",
        )
        with _home(Path(tmp) / "home"):
            code = run(
                src,
                out,
                backend=BACKEND_NAME,
                retrieval="none",
                no_cache=True,
                input_format="items",
                filter_preset=preset,
            )
        if code not in (0, 1):  # 1: some records failed (each is listed)
            raise RuntimeError(f"realign run exited with {code}")
        records = _read_jsonl(out)
        failures = _read_jsonl(out.with_name(f"{out.stem}.failures.jsonl"))
    by_id = {str(r.get("id")): r for r in records}
    failed = {str(f.get("id")): f for f in failures}
    return [_outcome(c, by_id.get(c.id), failed.get(c.id)) for c in cases]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------- the scores


@dataclass
class KindScore:
    kind: str
    n: int = 0
    hits: int = 0
    broken: int = 0

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else 0.0


@dataclass
class Report:
    kinds: dict[str, KindScore] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)

    def _total(self, bad: bool) -> KindScore:
        total = KindScore("bad" if bad else GOOD)
        for k in self.kinds.values():
            if (k.kind != GOOD) == bad:
                total.n, total.hits, total.broken = (
                    total.n + k.n,
                    total.hits + k.hits,
                    total.broken + k.broken,
                )
        return total

    @property
    def bad(self) -> KindScore:
        return self._total(True)

    @property
    def good(self) -> KindScore:
        return self._total(False)

    @property
    def misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.hit and not o.broken]

    @property
    def broken(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.broken]

    def summary(self) -> str:
        """One line per kind, for an assertion message."""
        parts = [f"{k.kind} {k.hits}/{k.n}" for k in self.kinds.values()]
        return (
            f"bad caught {self.bad.hits}/{self.bad.n} ({self.bad.rate:.1%}), good accepted "
            f"{self.good.hits}/{self.good.n} ({self.good.rate:.1%}), {len(self.broken)} failed "
            f"or skipped; per kind: {', '.join(parts)}"
        )


def score(outcomes: list[Outcome]) -> Report:
    report = Report(outcomes=outcomes)
    for kind in (*KINDS, GOOD):
        report.kinds[kind] = KindScore(kind)
    for o in outcomes:
        k = report.kinds[o.case.kind]
        k.n += 1
        k.hits += o.hit
        k.broken += o.broken
    report.kinds = {name: k for name, k in report.kinds.items() if k.n}
    return report


def format_report(report: Report, *, misses: int | None = None, notes: bool = False) -> str:
    """The per-kind table, the totals, then the misses and the failures with their rules.
    `misses`: how many misses to list (None: all); `notes`: each miss with its case's note."""
    lines = [f"{'kind':<12} {'n':>4} {'caught/accepted':>16} {'rate':>7} {'failed':>7}"]
    for k in report.kinds.values():
        what = "accepted" if k.kind == GOOD else "caught"
        lines.append(f"{k.kind:<12} {k.n:>4} {f'{k.hits} {what}':>16} {k.rate:>7.1%} {k.broken:>7}")
    bad, good = report.bad, report.good
    lines.append(f"{'bad, all':<12} {bad.n:>4} {f'{bad.hits} caught':>16} {bad.rate:>7.1%}")
    lines.append(f"{'good, all':<12} {good.n:>4} {f'{good.hits} accepted':>16} {good.rate:>7.1%}")
    lines.append(
        f"bad caught {bad.rate:.1%} (target >= 98%), good accepted {good.rate:.1%} (target >= 90%)"
    )
    shown = report.misses if misses is None else report.misses[:misses]
    if report.misses:
        lines.append(f"\nmisses ({len(report.misses)}): id, kind, what happened, rule")
    for o in shown:
        what = "accepted a bad rewrite" if o.case.bad else "rejected a good rewrite"
        lines.append(f"  {o.case.id:<16} {o.case.kind:<11} {what:<24} {o.rule}: {o.reason[:110]}")
        if notes:
            lines.append(f"  {'':<16} note: {o.case.note}")
    if len(shown) < len(report.misses):
        lines.append(f"  ... {len(report.misses) - len(shown)} more (--misses N)")
    if report.broken:
        lines.append(f"\nfailed or skipped ({len(report.broken)}): neither caught nor accepted")
    for o in report.broken:
        lines.append(f"  {o.case.id:<16} {o.case.kind:<11} {o.status}: {o.reason[:140]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="a .jsonl or a folder")
    parser.add_argument("--filter-preset", default="default")
    parser.add_argument("--misses", type=int, default=None, help="list at most N misses")
    parser.add_argument("--notes", action="store_true", help="show each miss's note")
    args = parser.parse_args(argv)
    try:
        cases = load_corpus(args.corpus)
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = score(run_corpus(cases, preset=args.filter_preset))
    print(f"corpus {args.corpus}: {len(cases)} cases, filter preset {args.filter_preset}")
    print(format_report(report, misses=args.misses, notes=args.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
