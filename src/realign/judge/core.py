"""Stage 5: judge responses with an LLM, pointwise (a 1-10 score per aspect) or pairwise.

Every assistant turn is judged as its own unit, with the turns before it as context.
Each aspect has a rubric (`prompts/judge_aspect_<aspect>.md`). Alignment is judged against the
request alone, as the ReAlign paper's GPT-4 judge did: scoring against realign's own format
criteria would make rewrites win by construction. Factuality reads a reference answer when one
is given, told whether its lines are aliases (any one is enough) or a list (every one is
needed, `metrics.reference_lines`).

Pairwise convention: outcomes are stated for **B (the second input) against A (the first)**:
`win` = B judged better, `lose` = A judged better, `tie` = judged equal. Each pair is judged
twice per aspect, once with A shown first and once with B shown first; only a verdict that
survives the swap counts as a win or a loss, anything else (a flip, or a tie in one order) is
a tie. This removes the judge's position bias from the counts.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

from pydantic import BaseModel, Field

from realign import metrics, prompts, tokens
from realign.criteria import CriteriaPack
from realign.llm.base import BackendError, ChatRequest
from realign.llm.engine import Engine, StructuredOutputError
from realign.records import FilterDecision, JudgeScore, Record, Status, input_task_type
from realign.stages.classify import context_text

DEFAULT_JUDGE_MODEL = "gpt-4o"
DEFAULT_ASPECTS = ("alignment", "factuality", "readability")
RESPONSE_BUDGET = 3000  # tokens of each response shown to the judge
CONTEXT_BUDGET = 1000  # tokens of earlier turns shown to the judge
OUTPUT_TOKENS = 400  # a short rationale and a score fit easily
UNKNOWN_TASK = "unknown"
CONVENTION = (
    "Outcomes are for B (the second input) against A (the first): win = B judged better, "
    "lose = A judged better, tie = judged equal or the verdict changed when the order of the "
    "two responses was swapped. Each pair was judged in both orders per aspect."
)

Outcome = Literal["win", "tie", "lose"]
Side = Literal["a", "b", "tie"]
Progress = Callable[[int], None]  # told the number of calls planned / just finished


# --- aspects and structured outputs -------------------------------------------------------


def available_aspects() -> list[str]:
    """Aspects that have a rubric file (`prompts/judge_aspect_<name>.md`)."""
    folder = resources.files("realign").joinpath("prompts")
    names = (p.name for p in folder.iterdir())
    return sorted(
        n[len("judge_aspect_") : -3] for n in names if re.fullmatch(r"judge_aspect_\w+\.md", n)
    )


def parse_aspects(text: str) -> list[str]:
    """'alignment,factuality' → ['alignment', 'factuality']; raises ValueError on unknown names."""
    wanted = [a.strip().lower() for a in text.split(",") if a.strip()]
    known = available_aspects()
    bad = [a for a in wanted if a not in known]
    if bad or not wanted:
        raise ValueError(
            f"unknown aspect(s) {', '.join(bad) or '(none given)'}; available: {', '.join(known)}"
        )
    return list(dict.fromkeys(wanted))


class PointwiseOutput(BaseModel):
    """Field order matters: the model writes its reasons before it commits to a score."""

    rationale: str = Field(description="One to three short sentences.")
    score: int = Field(ge=1, le=10)


class PairwiseOutput(BaseModel):
    """Field order matters: the model writes its reasons before it picks a winner."""

    rationale: str = Field(description="One to three short sentences.")
    winner: Literal["A", "B", "tie"]


# --- units: what is judged ----------------------------------------------------------------


class Unit(BaseModel):
    """One assistant turn of a record, with what the judge needs to see about it."""

    id: str
    index: int
    turn: int
    position: int  # 0 for the record's first assistant turn, 1 for the second, …
    task_type: str | None
    context: str
    instruction: str
    response: str
    status: Status | None = None  # from a `realign run` output, when present
    reason: str = ""
    original: str | None = None
    filter: FilterDecision | None = None


def task_type_of(record: Record, turn: int) -> str | None:
    """The task type realign assigned to this turn, else the one the input gives (ReAlign's
    `category`), else None."""
    for u in record.meta.units:
        if u.turn == turn and u.task_type:
            return u.task_type
    turns = record.assistant_turns()
    if record.meta.task_type and turns and turns[0] == turn:
        return record.meta.task_type
    own = record.turns[turn].extra.get("category")
    if isinstance(own, str) and own.strip():
        return own.strip()
    return input_task_type(record, turn)


def units_of(record: Record) -> list[Unit]:
    out = []
    for pos, turn in enumerate(record.assistant_turns()):
        meta = next((u for u in record.meta.units if u.turn == turn), None)
        out.append(
            Unit(
                id=record.id,
                index=record.index,
                turn=turn,
                position=pos,
                task_type=task_type_of(record, turn),
                context=context_text(record, turn, budget=CONTEXT_BUDGET),
                instruction=record.instruction_for(turn),
                response=record.turns[turn].content,
                status=meta.status if meta else None,
                reason=meta.reason if meta else "",
                original=meta.original if meta else None,
                filter=meta.filter if meta else None,
            )
        )
    return out


def _norm_instruction(text: str) -> str:
    return " ".join(text.split()).lower()


class ReferenceIndex:
    """Reference answers, found by record id or, failing that, by instruction text."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._by_id: dict[str, Record] = {}
        self._by_instruction: dict[str, Record] = {}
        for r in records:
            self._by_id.setdefault(r.id, r)
            self._by_instruction.setdefault(_norm_instruction(r.instruction), r)

    def __len__(self) -> int:
        return len(self._by_id)

    def lookup(self, ids: Sequence[str], instruction: str, position: int) -> str | None:
        rec = next((self._by_id[i] for i in ids if i in self._by_id), None)
        if rec is None:
            rec = self._by_instruction.get(_norm_instruction(instruction))
        if rec is None:
            return None
        turns = rec.assistant_turns()
        if not turns:
            return None
        # Same assistant turn when the reference is multi-turn too, else its only answer.
        return rec.turns[turns[min(position, len(turns) - 1)]].content


# --- prompts ------------------------------------------------------------------------------


def _shown(text: str) -> str:
    cut = tokens.truncate(text, RESPONSE_BUDGET)
    return cut if cut == text else cut + "\n[… truncated]"


def rubric(
    aspect: str,
    *,
    pointwise: bool,
    task_type: str | None,
    pack: CriteriaPack | None,
    reference: str | None,
    instruction: str = "",
) -> str:
    # The built-in rubrics do not read `criterion` (alignment is judged against the request);
    # a user's own rubric file may.
    crit = pack.criteria.get(task_type) if pack is not None and task_type else None
    (msg,) = prompts.render(
        f"judge_aspect_{aspect}",
        pointwise=pointwise,
        task_type=task_type or UNKNOWN_TASK,
        criterion=crit.format if crit else "",
        reference=reference or "",
        reference_lines=metrics.reference_lines(instruction, reference) if reference else "any",
        reference_count=len(metrics.gold_answers(reference)) if reference else 0,
    )
    return msg.content


def pointwise_request(
    unit: Unit, aspect: str, *, pack: CriteriaPack | None, reference: str | None
) -> ChatRequest:
    messages = prompts.render(
        "judge_pointwise",
        aspect=aspect,
        rubric=rubric(
            aspect,
            pointwise=True,
            task_type=unit.task_type,
            pack=pack,
            reference=reference,
            instruction=unit.instruction,
        ),
        context=unit.context,
        instruction=unit.instruction,
        response=_shown(unit.response),
    )
    return ChatRequest(
        stage="judge", messages=messages, max_tokens=OUTPUT_TOKENS, record_id=unit.id
    )


def pairwise_request(
    first: Unit,
    second: Unit,
    aspect: str,
    *,
    task_type: str | None,
    pack: CriteriaPack | None,
    reference: str | None,
) -> ChatRequest:
    messages = prompts.render(
        "judge_pairwise",
        aspect=aspect,
        rubric=rubric(
            aspect,
            pointwise=False,
            task_type=task_type,
            pack=pack,
            reference=reference,
            instruction=first.instruction,
        ),
        context=first.context,
        instruction=first.instruction,
        response_a=_shown(first.response),
        response_b=_shown(second.response),
    )
    return ChatRequest(
        stage="judge", messages=messages, max_tokens=OUTPUT_TOKENS, record_id=first.id
    )


# --- swap consistency ---------------------------------------------------------------------


def to_side(winner: Literal["A", "B", "tie"], b_shown_first: bool) -> Side:
    """Map the judge's 'A'/'B' (positions) back to the inputs a/b."""
    if winner == "tie":
        return "tie"
    shown_first = "b" if b_shown_first else "a"
    shown_second = "a" if b_shown_first else "b"
    return shown_first if winner == "A" else shown_second


def combine_orders(a_first: Side, b_first: Side) -> Outcome:
    """B's outcome against A: a win or loss only when both orders agree, else a tie."""
    if a_first == b_first == "b":
        return "win"
    if a_first == b_first == "a":
        return "lose"
    return "tie"


# --- matching -----------------------------------------------------------------------------


class UnmatchedRecord(BaseModel):
    side: Literal["a", "b"]
    id: str
    index: int
    instruction: str
    reason: str


class RecordPair(BaseModel):
    a: Record
    b: Record
    matched_by: Literal["id", "instruction"]


class MatchingInfo(BaseModel):
    pairs: int = 0
    by_id: int = 0
    by_instruction: int = 0
    unmatched: list[UnmatchedRecord] = Field(default_factory=list)
    # Pairs matched by id whose instructions differ: a sign the ids do not mean the same item.
    instruction_mismatch_ids: list[str] = Field(default_factory=list)


def _unmatched(side: Literal["a", "b"], r: Record, reason: str) -> UnmatchedRecord:
    return UnmatchedRecord(
        side=side, id=r.id, index=r.index, instruction=r.instruction[:300], reason=reason
    )


def match_records(
    a: Sequence[Record], b: Sequence[Record]
) -> tuple[list[RecordPair], MatchingInfo]:
    """Pair records by id; the rest by instruction text (first unused match wins)."""
    info = MatchingInfo()
    b_by_id: dict[str, int] = {}
    for j, r in enumerate(b):
        b_by_id.setdefault(r.id, j)
    used_b: set[int] = set()
    pairs: dict[int, RecordPair] = {}
    for i, r in enumerate(a):
        j = b_by_id.get(r.id)
        if j is not None and j not in used_b:
            used_b.add(j)
            pairs[i] = RecordPair(a=r, b=b[j], matched_by="id")
            if _norm_instruction(r.instruction) != _norm_instruction(b[j].instruction):
                info.instruction_mismatch_ids.append(r.id)
    by_text: dict[str, list[int]] = defaultdict(list)
    for j, r in enumerate(b):
        if j not in used_b:
            by_text[_norm_instruction(r.instruction)].append(j)
    for i, r in enumerate(a):
        if i in pairs:
            continue
        queue = by_text.get(_norm_instruction(r.instruction))
        if queue:
            j = queue.pop(0)
            used_b.add(j)
            pairs[i] = RecordPair(a=r, b=b[j], matched_by="instruction")
        else:
            info.unmatched.append(_unmatched("a", r, "no record in B with this id or instruction"))
    for j, r in enumerate(b):
        if j not in used_b:
            info.unmatched.append(_unmatched("b", r, "no record in A with this id or instruction"))
    out = [pairs[i] for i in sorted(pairs)]
    info.pairs = len(out)
    info.by_id = sum(p.matched_by == "id" for p in out)
    info.by_instruction = info.pairs - info.by_id
    return out, info


# --- statistics ---------------------------------------------------------------------------


class RateCI(BaseModel):
    rate: float
    low: float
    high: float


class OutcomeStats(BaseModel):
    n: int  # judged units
    records: int  # the resampling unit of the bootstrap
    counts: dict[Outcome, int]
    win: RateCI
    tie: RateCI
    lose: RateCI
    consistency: float  # share of units where both orders named the same side (or both tie)


class ScoreStats(BaseModel):
    n: int
    mean: float
    low: float
    high: float
    histogram: list[int]  # counts of scores 1..10


def _rate_ci(num: list[float], den: list[float], resamples: int, seed: int) -> RateCI:
    ci = metrics.bootstrap_ci(num, den, resamples=resamples, seed=seed)
    lo, hi = ci if ci else (0.0, 0.0)
    total = sum(den)
    return RateCI(rate=sum(num) / total if total else 0.0, low=lo, high=hi)


def outcome_stats(
    items: Sequence[tuple[str, Outcome, bool]], *, resamples: int = 1000, seed: int = 0
) -> OutcomeStats:
    """`items`: (record key, outcome, order-consistent) per judged unit."""
    per_record: dict[str, dict[str, int]] = defaultdict(
        lambda: {"win": 0, "tie": 0, "lose": 0, "n": 0}
    )
    for key, outcome, _ in items:
        per_record[key][outcome] += 1
        per_record[key]["n"] += 1
    rows = list(per_record.values())
    den = [float(r["n"]) for r in rows]
    rates = {
        o: _rate_ci([float(r[o]) for r in rows], den, resamples, seed)
        for o in ("win", "tie", "lose")
    }
    return OutcomeStats(
        n=len(items),
        records=len(rows),
        counts={o: sum(r[o] for r in rows) for o in ("win", "tie", "lose")},  # type: ignore[misc]
        consistency=sum(c for _, _, c in items) / len(items) if items else 0.0,
        **rates,
    )


def score_stats(
    items: Sequence[tuple[str, int]], *, resamples: int = 1000, seed: int = 0
) -> ScoreStats:
    """`items`: (record key, score) per judged unit."""
    per_record: dict[str, list[int]] = defaultdict(list)
    for key, s in items:
        per_record[key].append(s)
    num = [float(sum(v)) for v in per_record.values()]
    den = [float(len(v)) for v in per_record.values()]
    ci = metrics.bootstrap_ci(num, den, resamples=resamples, seed=seed) or (0.0, 0.0)
    hist = [0] * 10
    for _, s in items:
        hist[s - 1] += 1
    return ScoreStats(
        n=len(items),
        mean=sum(num) / sum(den) if den else 0.0,
        low=ci[0],
        high=ci[1],
        histogram=hist,
    )


def _by_task_type(items: Sequence[tuple[str | None, object]]) -> dict[str, list[object]]:
    groups: dict[str, list[object]] = defaultdict(list)
    for tt, item in items:
        groups[tt or UNKNOWN_TASK].append(item)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


# --- degenerate judges --------------------------------------------------------------------
#
# A model too weak to judge (SmolLM2-135M, say) still returns schema-valid JSON: a tie or a
# constant score every time, and rationales such as "][" or a copy of the prompt. Its figures
# would be reported like any others, so they are checked here and flagged in the output
# (`judge_warnings`) and by the CLI.

MIN_FOR_RATES = 5  # judged units before all-tie / never-consistent / one-score can be flagged
DEGENERATE_SHARE = 0.5  # this share of empty / echoed rationales flags the aspect
SAME_RATIONALE_SHARE = 0.8  # this share of one repeated rationale flags the aspect
_WORD = re.compile(r"[^\W\d_]{2,}")  # a word of at least two letters
_PROMPT_TAGS = re.compile(r"</?(?:response(?:_[ab])?|request|rubric|context|reference)>")


def rationale_problem(text: str) -> str | None:
    """Why a rationale says nothing ('no words', 'copies the prompt'), else None."""
    if not _WORD.search(text):
        return "no words"
    if _PROMPT_TAGS.search(text):
        return "copies the prompt"
    return None


def _rationale_warnings(aspect: str, rationales: Sequence[str]) -> list[str]:
    n = len(rationales)
    if n == 0:
        return []
    out = []
    bad = [(r, why) for r in rationales if (why := rationale_problem(r))]
    if len(bad) >= DEGENERATE_SHARE * n:
        example = bad[0][0].strip()[:40]
        out.append(
            f"{aspect}: {len(bad)} of {n} rationales are empty or not an assessment "
            f"({bad[0][1]}, e.g. {example!r})"
        )
    if n >= 3:
        text, count = Counter(" ".join(r.split()).lower() for r in rationales).most_common(1)[0]
        if count >= SAME_RATIONALE_SHARE * n:
            out.append(f"{aspect}: {count} of {n} rationales are the same text ({text[:40]!r})")
    return out


def comparison_warnings(cmp: Comparison) -> list[str]:
    """What makes a comparison's verdicts meaningless: [] when nothing looks degenerate."""
    out = []
    for aspect in cmp.aspects:
        st = cmp.summary[aspect].overall
        if st.n >= MIN_FOR_RATES and st.counts["tie"] == st.n:
            why = (
                "the judge always preferred the same position, so every verdict flipped when "
                "the order was swapped (order consistency 0%)"
                if st.consistency == 0
                else "the judge never preferred either response"
            )
            out.append(f"{aspect}: all {st.n} pairs are ties: {why}")
        elif st.n >= MIN_FOR_RATES and st.consistency == 0:
            out.append(f"{aspect}: order consistency 0% over {st.n} pairs")
        rationales = [
            o.rationale
            for p in cmp.pairs
            if (v := p.verdicts.get(aspect))
            for o in (v.a_first, v.b_first)
            if o is not None
        ]
        out += _rationale_warnings(aspect, rationales)
    return out


def scores_warnings(rep: ScoresReport) -> list[str]:
    """What makes pointwise scores meaningless: [] when nothing looks degenerate."""
    out = []
    for aspect in rep.aspects:
        scores = [u.scores[aspect] for u in rep.units if aspect in u.scores]
        distinct = {s.score for s in scores}
        if len(scores) >= MIN_FOR_RATES and len(distinct) == 1:
            out.append(
                f"{aspect}: all {len(scores)} responses got the same score ({distinct.pop()})"
            )
        out += _rationale_warnings(aspect, [s.rationale for s in scores])
    return out


def unfit_message(model: str, warnings: Sequence[str]) -> str:
    """The one-paragraph verdict on a judge whose output is degenerate."""
    return (
        f"The judge model {model} looks unfit for judging: its verdicts are degenerate, so the "
        "figures above measure the model, not the responses ("
        + "; ".join(warnings)
        + "). Judge with a stronger model (--model, --base-url)."
    )


# --- running many calls -------------------------------------------------------------------


async def _run_pool(jobs: Iterable[Callable[[], Awaitable[None]]], workers: int) -> None:
    """Run jobs with at most `workers` in flight, without creating them all up front."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:  # one shared iterator: each job is taken by exactly one worker
            await job()

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))


class JudgeFailure(BaseModel):
    id: str
    turn: int
    aspect: str
    order: Literal["a_first", "b_first"] | None = None
    error: str
    raw_output: str | None = None


async def _judge_call(
    engine: Engine, request: ChatRequest, schema: type[PointwiseOutput] | type[PairwiseOutput]
) -> tuple[PointwiseOutput | PairwiseOutput | None, str | None, str | None]:
    """(output, error, raw output); errors of the model or backend are data, not crashes."""
    try:
        (out,) = await engine.structured(request, schema)
        return out, None, None
    except StructuredOutputError as e:
        return None, str(e), e.raw_output
    except BackendError as e:
        return None, f"backend error: {e}", None


# --- pointwise ----------------------------------------------------------------------------


class ScoredUnit(BaseModel):
    id: str
    index: int
    turn: int
    position: int
    task_type: str | None
    instruction: str
    response: str
    reference: str | None
    metrics: metrics.ResponseMetrics
    scores: dict[str, JudgeScore] = Field(default_factory=dict)


class AspectScores(BaseModel):
    overall: ScoreStats
    by_task_type: dict[str, ScoreStats]


class ScoresReport(BaseModel):
    kind: Literal["scores"] = "scores"
    input: str
    reference: str | None
    model: str
    backend: str
    aspects: list[str]
    resamples: int
    seed: int
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    summary: dict[str, AspectScores]
    metrics: metrics.MetricsSummary
    units: list[ScoredUnit]
    failures: list[JudgeFailure]
    read_errors: list[str] = Field(default_factory=list)  # input records that could not be read
    # Why the judge model looks unfit (all ties, "][" rationales, …): see `scores_warnings`.
    judge_warnings: list[str] = Field(default_factory=list)


async def judge_pointwise(
    engine: Engine,
    records: Sequence[Record],
    aspects: Sequence[str],
    *,
    pack: CriteriaPack | None,
    references: ReferenceIndex | None = None,
    input_name: str = "",
    reference_name: str | None = None,
    on_total: Progress | None = None,
    on_progress: Progress | None = None,
    workers: int = 16,
    resamples: int = 1000,
    seed: int = 0,
) -> ScoresReport:
    units = [u for r in records for u in units_of(r)]
    refs = [
        references.lookup([u.id], u.instruction, u.position) if references else None for u in units
    ]
    scored = [
        ScoredUnit(
            id=u.id,
            index=u.index,
            turn=u.turn,
            position=u.position,
            task_type=u.task_type,
            instruction=u.instruction,
            response=u.response,
            reference=ref,
            metrics=metrics.response_metrics(u.response, ref, u.task_type, u.instruction),
        )
        for u, ref in zip(units, refs, strict=True)
    ]
    failures: list[JudgeFailure] = []
    if on_total:
        on_total(len(units) * len(aspects))

    def job(k: int, aspect: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            u = units[k]
            req = pointwise_request(u, aspect, pack=pack, reference=refs[k])
            out, err, raw = await _judge_call(engine, req, PointwiseOutput)
            if isinstance(out, PointwiseOutput):
                scored[k].scores[aspect] = JudgeScore(score=out.score, rationale=out.rationale)
            else:
                failures.append(
                    JudgeFailure(
                        id=u.id, turn=u.turn, aspect=aspect, error=err or "", raw_output=raw
                    )
                )
            if on_progress:
                on_progress(1)

        return run

    await _run_pool((job(k, a) for k in range(len(units)) for a in aspects), workers)
    # Keep the scores in aspect order whatever order the calls finished in.
    for s in scored:
        s.scores = {a: s.scores[a] for a in aspects if a in s.scores}
    summary = {}
    for aspect in aspects:
        # Keyed by position in the input: ids may repeat, records may not.
        items = [
            (str(s.index), s.scores[aspect].score, s.task_type)
            for s in scored
            if aspect in s.scores
        ]
        groups = _by_task_type([(tt, (key, sc)) for key, sc, tt in items])
        summary[aspect] = AspectScores(
            overall=score_stats([(k, sc) for k, sc, _ in items], resamples=resamples, seed=seed),
            by_task_type={
                tt: score_stats(g, resamples=resamples, seed=seed)  # type: ignore[arg-type]
                for tt, g in groups.items()
            },
        )
    failures.sort(key=lambda f: (f.id, f.turn, f.aspect))
    report = ScoresReport(
        input=input_name,
        reference=reference_name,
        model=engine.backend.model,
        backend=engine.backend.backend_id,
        aspects=list(aspects),
        resamples=resamples,
        seed=seed,
        summary=summary,
        metrics=metrics.summarize([s.metrics for s in scored]),
        units=scored,
        failures=failures,
    )
    report.judge_warnings = scores_warnings(report)
    return report


# --- pairwise -----------------------------------------------------------------------------


class OrderVerdict(BaseModel):
    shown_first: Literal["a", "b"]
    winner: Side  # mapped back to the inputs
    rationale: str


class AspectVerdict(BaseModel):
    outcome: Outcome | None  # None when a call failed
    consistent: bool  # both orders named the same side (or both said tie)
    a_first: OrderVerdict | None
    b_first: OrderVerdict | None


class PairResult(BaseModel):
    id_a: str
    id_b: str
    index_a: int
    index_b: int
    turn: int
    position: int  # which assistant turn of the record (0 = first)
    matched_by: Literal["id", "instruction"]
    task_type: str | None
    instruction: str
    response_a: str
    response_b: str
    reference: str | None
    metrics_a: metrics.ResponseMetrics
    metrics_b: metrics.ResponseMetrics
    # What `realign run` decided for B's unit, when B is a run output.
    status_b: Status | None = None
    reason_b: str = ""
    filter_b: FilterDecision | None = None
    verdicts: dict[str, AspectVerdict] = Field(default_factory=dict)


class AspectSummary(BaseModel):
    overall: OutcomeStats
    by_task_type: dict[str, OutcomeStats]


class Comparison(BaseModel):
    kind: Literal["comparison"] = "comparison"
    convention: str = CONVENTION
    a: str
    b: str
    reference: str | None
    model: str
    backend: str
    aspects: list[str]
    resamples: int
    seed: int
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    matching: MatchingInfo
    summary: dict[str, AspectSummary]
    metrics_a: metrics.MetricsSummary
    metrics_b: metrics.MetricsSummary
    pairs: list[PairResult]
    failures: list[JudgeFailure]
    read_errors: list[str] = Field(default_factory=list)  # input records that could not be read
    # Why the judge model looks unfit (all ties, "][" rationales, …): see `comparison_warnings`.
    judge_warnings: list[str] = Field(default_factory=list)


def _pair_units(
    pairs: Sequence[RecordPair], info: MatchingInfo
) -> list[tuple[RecordPair, Unit, Unit]]:
    out = []
    for p in pairs:
        ua, ub = units_of(p.a), units_of(p.b)
        if len(ua) != len(ub):
            info.unmatched.append(
                _unmatched(
                    "b",
                    p.b,
                    f"A's record {p.a.id} has {len(ua)} assistant turns and B's has {len(ub)}; "
                    f"only the first {min(len(ua), len(ub))} are compared",
                )
            )
        out.extend((p, x, y) for x, y in zip(ua, ub, strict=False))
    return out


async def judge_pairwise(
    engine: Engine,
    records_a: Sequence[Record],
    records_b: Sequence[Record],
    aspects: Sequence[str],
    *,
    pack: CriteriaPack | None,
    references: ReferenceIndex | None = None,
    names: tuple[str, str] = ("A", "B"),
    reference_name: str | None = None,
    on_total: Progress | None = None,
    on_progress: Progress | None = None,
    workers: int = 16,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    pairs, info = match_records(records_a, records_b)
    units = _pair_units(pairs, info)
    results: list[PairResult] = []
    for p, ua, ub in units:
        task_type = ub.task_type or ua.task_type
        ref = references.lookup([ua.id, ub.id], ua.instruction, ua.position) if references else None
        results.append(
            PairResult(
                id_a=ua.id,
                id_b=ub.id,
                index_a=ua.index,
                index_b=ub.index,
                turn=ub.turn,
                position=ub.position,
                matched_by=p.matched_by,
                task_type=task_type,
                instruction=ua.instruction,
                response_a=ua.response,
                response_b=ub.response,
                reference=ref,
                metrics_a=metrics.response_metrics(ua.response, ref, task_type, ua.instruction),
                metrics_b=metrics.response_metrics(ub.response, ref, task_type, ua.instruction),
                status_b=ub.status,
                reason_b=ub.reason,
                filter_b=ub.filter,
            )
        )
    orders: dict[tuple[int, str, bool], OrderVerdict] = {}
    failures: list[JudgeFailure] = []
    if on_total:
        on_total(len(units) * len(aspects) * 2)

    def job(k: int, aspect: str, b_first: bool) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            _, ua, ub = units[k]
            first, second = (ub, ua) if b_first else (ua, ub)
            req = pairwise_request(
                first,
                second,
                aspect,
                task_type=results[k].task_type,
                pack=pack,
                reference=results[k].reference,
            )
            out, err, raw = await _judge_call(engine, req, PairwiseOutput)
            if isinstance(out, PairwiseOutput):
                orders[(k, aspect, b_first)] = OrderVerdict(
                    shown_first="b" if b_first else "a",
                    winner=to_side(out.winner, b_first),
                    rationale=out.rationale,
                )
            else:
                failures.append(
                    JudgeFailure(
                        id=ua.id,
                        turn=ua.turn,
                        aspect=aspect,
                        order="b_first" if b_first else "a_first",
                        error=err or "",
                        raw_output=raw,
                    )
                )
            if on_progress:
                on_progress(1)

        return run

    await _run_pool(
        (job(k, a, bf) for k in range(len(units)) for a in aspects for bf in (False, True)),
        workers,
    )
    for k, res in enumerate(results):
        for aspect in aspects:
            va, vb = orders.get((k, aspect, False)), orders.get((k, aspect, True))
            both = va is not None and vb is not None
            res.verdicts[aspect] = AspectVerdict(
                outcome=combine_orders(va.winner, vb.winner) if va and vb else None,
                consistent=both and va.winner == vb.winner,  # type: ignore[union-attr]
                a_first=va,
                b_first=vb,
            )
    summary = {}
    for aspect in aspects:
        judged = [
            (r.task_type, (f"{r.index_a}:{r.index_b}", v.outcome, v.consistent))
            for r in results
            if (v := r.verdicts[aspect]).outcome is not None
        ]
        summary[aspect] = AspectSummary(
            overall=outcome_stats([x for _, x in judged], resamples=resamples, seed=seed),  # type: ignore[misc]
            by_task_type={
                tt: outcome_stats(g, resamples=resamples, seed=seed)  # type: ignore[arg-type]
                for tt, g in _by_task_type(judged).items()
            },
        )
    failures.sort(key=lambda f: (f.id, f.turn, f.aspect, f.order or ""))
    cmp = Comparison(
        a=names[0],
        b=names[1],
        reference=reference_name,
        model=engine.backend.model,
        backend=engine.backend.backend_id,
        aspects=list(aspects),
        resamples=resamples,
        seed=seed,
        matching=info,
        summary=summary,
        metrics_a=metrics.summarize([r.metrics_a for r in results]),
        metrics_b=metrics.summarize([r.metrics_b for r in results]),
        pairs=results,
        failures=failures,
    )
    cmp.judge_warnings = comparison_warnings(cmp)
    return cmp
