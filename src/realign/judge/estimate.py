"""`realign judge --dry-run`: the requests a judge run would send, counted and priced without
sending any. The requests are built by the same functions the run uses (`pairwise_request`,
`pointwise_request`), so the prompt tokens are the real ones; the output is counted at its
cap (`OUTPUT_TOKENS`), an upper bound."""

from __future__ import annotations

import json
from collections.abc import Sequence

from realign import tokens
from realign.criteria import CriteriaPack
from realign.judge.multi import pairings
from realign.judge.pairwise import pair_units
from realign.judge.requests import (
    OUTPUT_TOKENS,
    PairwiseOutput,
    PointwiseOutput,
    pairwise_request,
    pointwise_request,
)
from realign.judge.units import ReferenceIndex, match_records, units_of
from realign.llm.base import ChatRequest
from realign.llm.pricing import StageEstimate
from realign.records import Record


def _input_tokens(request: ChatRequest, schema_tokens: int) -> int:
    return sum(tokens.count(m.content) for m in request.messages) + schema_tokens


def estimate_judge(
    datasets: Sequence[Sequence[Record]],
    aspects: Sequence[str],
    *,
    pack: CriteriaPack | None,
    references: ReferenceIndex | None,
    baseline: int | None = None,
) -> StageEstimate:
    """One stage line for the whole judge run: one dataset is scored pointwise; two or more
    are compared pairwise (each pair of units in both orders, per aspect)."""
    requests = tin = 0
    if len(datasets) == 1:
        schema = tokens.count(json.dumps(PointwiseOutput.model_json_schema()))
        for record in datasets[0]:
            for u in units_of(record):
                ref = references.lookup([u.id], u.instruction, u.position) if references else None
                for aspect in aspects:
                    req = pointwise_request(u, aspect, pack=pack, reference=ref)
                    requests += 1
                    tin += _input_tokens(req, schema)
    else:
        schema = tokens.count(json.dumps(PairwiseOutput.model_json_schema()))
        for a, b in pairings(len(datasets), baseline):
            pairs, info = match_records(datasets[a], datasets[b])
            for _, ua, ub in pair_units(pairs, info):
                ref = (
                    references.lookup([ua.id, ub.id], ua.instruction, ua.position)
                    if references
                    else None
                )
                task_type = ub.task_type or ua.task_type
                for aspect in aspects:
                    for first, second in ((ua, ub), (ub, ua)):
                        req = pairwise_request(
                            first, second, aspect, task_type=task_type, pack=pack, reference=ref
                        )
                        requests += 1
                        tin += _input_tokens(req, schema)
    return StageEstimate(
        stage="judge", requests=requests, input_tokens=tin, output_tokens=requests * OUTPUT_TOKENS
    )
