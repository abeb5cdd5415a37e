"""Stage 5: judge responses with an LLM, pointwise (a 1-10 score per aspect) or pairwise.

Every assistant turn is judged as its own unit, with the turns before it as context.
Each aspect has a rubric (`prompts/judge_aspect_<aspect>.md`). Alignment is judged against the
request alone, as the ReAlign paper's GPT-4 judge did: scoring against realign's own format
criteria would make rewrites win by construction. Factuality reads a reference answer when one
is given, told whether its lines are aliases (any one is enough) or a list (every one is
needed, `metrics.reference_lines`).

`units` (what is judged, reference answers, pairing two datasets) → `requests` (rubrics,
prompts, outputs, calls) → `stats` (bootstrap CIs, degenerate-judge signs), `lc`
(length-controlled win rate), `ranking` (Bradley-Terry ratings) → `pointwise` / `pairwise` /
`multi` (the runs and their reports); `estimate` counts a run's requests for `--dry-run`.
"""

from realign.judge.lc import LengthControlled, length_controlled
from realign.judge.multi import MultiComparison, judge_many
from realign.judge.pairwise import (
    CONVENTION,
    AspectSummary,
    AspectVerdict,
    Comparison,
    OrderVerdict,
    PairResult,
    comparison_warnings,
    judge_pairwise,
)
from realign.judge.pointwise import (
    AspectScores,
    ScoredUnit,
    ScoresReport,
    judge_pointwise,
    scores_warnings,
)
from realign.judge.ranking import Rating, bradley_terry
from realign.judge.requests import (
    DEFAULT_ASPECTS,
    DEFAULT_JUDGE_MODEL,
    JudgeFailure,
    Outcome,
    PairwiseOutput,
    PointwiseOutput,
    Side,
    available_aspects,
    combine_orders,
    pairwise_request,
    parse_aspects,
    pointwise_request,
    rubric,
    to_side,
)
from realign.judge.stats import (
    OutcomeStats,
    RateCI,
    ScoreStats,
    outcome_stats,
    rationale_problem,
    score_stats,
    unfit_message,
)
from realign.judge.units import (
    UNKNOWN_TASK,
    MatchingInfo,
    RecordPair,
    ReferenceIndex,
    Unit,
    UnmatchedRecord,
    match_records,
    task_type_of,
    units_of,
)

__all__ = [
    "CONVENTION",
    "DEFAULT_ASPECTS",
    "DEFAULT_JUDGE_MODEL",
    "UNKNOWN_TASK",
    "AspectScores",
    "AspectSummary",
    "AspectVerdict",
    "Comparison",
    "JudgeFailure",
    "LengthControlled",
    "MatchingInfo",
    "MultiComparison",
    "OrderVerdict",
    "Outcome",
    "OutcomeStats",
    "PairResult",
    "PairwiseOutput",
    "PointwiseOutput",
    "RateCI",
    "Rating",
    "RecordPair",
    "ReferenceIndex",
    "ScoreStats",
    "ScoredUnit",
    "ScoresReport",
    "Side",
    "Unit",
    "UnmatchedRecord",
    "available_aspects",
    "bradley_terry",
    "combine_orders",
    "comparison_warnings",
    "judge_many",
    "judge_pairwise",
    "judge_pointwise",
    "length_controlled",
    "match_records",
    "outcome_stats",
    "pairwise_request",
    "parse_aspects",
    "pointwise_request",
    "rationale_problem",
    "rubric",
    "score_stats",
    "scores_warnings",
    "task_type_of",
    "to_side",
    "unfit_message",
    "units_of",
]
