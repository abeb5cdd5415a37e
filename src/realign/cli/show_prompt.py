"""`realign run … --show-prompt ID`: the exact messages the rewrite of one record would send.

Nothing is sent: no LLM call and no search. The task type is the one the input gives, else the
offline classifier's (`--classifier embedding`); with neither, the classifier's own request is
shown, since the rewrite prompt depends on its answer. Evidence is what the input or an earlier
`realign retrieve` attached; a unit that would be searched shows the query instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import typer

from realign.cli.console import make_console
from realign.criteria import CriteriaPack
from realign.io.formats import input_evidence
from realign.llm.base import ChatRequest
from realign.pipeline.build import RunSettings, make_embedding
from realign.pipeline.record import RunOptions, skip_reason
from realign.records import Failure, Record, UnitMeta, ensure_units, input_task_type
from realign.search.registry import default_retrieval_spec
from realign.stages.classify import classify_request, pretype_offline
from realign.stages.retrieve_query import build_query, request_context
from realign.stages.rewrite import build_request
from realign.stages.rewrite_text import TemplateError


def find_record(items: Iterable[Record | Failure], wanted: str) -> Record | Failure | None:
    """The record whose id is `wanted`, else (a number) the one at that 0-based position."""
    by_index = int(wanted) if wanted.isdigit() else None
    for item in items:
        if item.id == wanted or (by_index is not None and item.index == by_index):
            return item
    return None


def print_request(request: ChatRequest) -> None:
    params = f"n={request.n}, temperature={request.temperature}, max_tokens={request.max_tokens}"
    typer.echo(f"request: stage {request.stage}, {params}")
    for m in request.messages:
        typer.echo(f"----- {m.role} -----")
        typer.echo(m.content)
    typer.echo("----- end -----")


def show_unit(
    pack: CriteriaPack, options: RunOptions, record: Record, unit: UnitMeta, retrieval: str
) -> None:
    typer.echo(f"=== record {record.id}, assistant turn {unit.turn} ===")
    label = input_task_type(record, unit.turn)
    if unit.task_type is None and label is not None and label in pack and not options.reclassify:
        unit.task_type, unit.task_source = label, "input"
    if unit.task_type is None:
        typer.echo("task type: not given in the input; the LLM classifier would be asked:")
        print_request(classify_request(pack, record, unit.turn))
        typer.echo(
            "the rewrite prompt depends on its answer: give the record a task type, or use "
            "--classifier embedding"
        )
        return
    task = unit.task_type if unit.task_type in pack else "default"
    crit = pack[task]
    typer.echo(f"task type: {task} (from {unit.task_source or 'input'})")
    typer.echo(f"criterion: {crit.name} (hash {crit.content_hash}) {crit.path}")
    instruction = record.instruction_for(unit.turn)
    original = record.turns[unit.turn].content
    reason = skip_reason(pack, options, task, instruction, original)
    if reason is not None:
        typer.echo(f"not rewritten: {reason}")
        return
    evidence = unit.evidence or input_evidence(record, unit.turn)
    if evidence:
        typer.echo(f"evidence: {len(evidence)} item(s) given in the input or attached earlier")
    elif crit.retrieval and retrieval == "none":
        typer.echo("evidence: none (retrieval is off)")
    elif crit.retrieval:
        if pack.settings.search_style == "realign":  # ReAlign searches the whole instruction
            query = " ".join(instruction.split())
        else:
            query = build_query(instruction, request_context(record, unit.turn))
        typer.echo(
            f"evidence: a run would search {retrieval} for {query!r} (not sent now); the prompt below "
            "is the one without evidence"
        )
    else:
        typer.echo("evidence: none (the criterion says retrieval: no)")
    templates = pack.templates if options.answer_style == "realign-text" else None
    try:
        request = build_request(
            record,
            unit.turn,
            crit,
            evidence,
            force=options.force,
            samples=options.samples,
            prompt=options.prompt,
            temperature=options.temperature,
            templates=templates,
            max_tokens=options.max_tokens,
        )
    except TemplateError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    style = f"pack templates ({options.answer_style})" if templates else f"prompt {options.prompt}"
    typer.echo(f"prompt: {style}")
    print_request(request)


def show_prompt(
    settings: RunSettings,
    pack: CriteriaPack,
    options: RunOptions,
    items: Iterable[Record | Failure],
    wanted: str,
) -> int:
    found = find_record(items, wanted)
    if found is None:
        typer.echo(f"error: --show-prompt {wanted}: no record with that id or position", err=True)
        return 2
    if isinstance(found, Failure):
        typer.echo(
            f"error: --show-prompt {wanted}: the record cannot be read: {found.error}", err=True
        )
        return 2
    ensure_units(found)
    embedding = make_embedding(settings.classifier, pack, make_console(stderr=True))
    if embedding is not None:
        pretype_offline([found], pack, embedding, min_confidence=0.0, reclassify=options.reclassify)
    retrieval = settings.retrieval or default_retrieval_spec(os.environ)[0]
    for unit in found.meta.units:
        show_unit(pack, options, found, unit, retrieval.split(":")[0])
    if not found.meta.units:
        typer.echo(f"record {found.id} has no assistant turn: nothing would be sent")
    return 0
