"""The `--dry-run` estimate of a run: requests and tokens per stage, priced for the chosen
model, without sending anything. Which units would be rewritten is decided by the pipeline's
own `skip_reason`, so the estimate and the run never disagree on the rules."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from rich.console import Console

from realign import prompts, tokens
from realign.criteria import CriteriaPack
from realign.io.formats import input_evidence
from realign.llm.build import pricing_model
from realign.pipeline.build import RunSettings
from realign.pipeline.record import RunOptions, skip_reason
from realign.records import Failure, Record, input_task_type
from realign.stages.classify import classification_schema, context_text
from realign.stages.rewrite import build_request, output_budget
from realign.stages.verify import VerifyOutput

CLASSIFY_OUTPUT_TOKENS = 40
REASONING_TOKENS = 60
VERIFY_ESTIMATE_TOKENS = 60  # two booleans and a sentence


def estimate_run(
    settings: RunSettings,
    pack: CriteriaPack,
    options: RunOptions,
    items: Iterable[Record | Failure],
    err: Console,
) -> None:
    """Requests and tokens per stage, priced for the chosen model. Sends nothing.

    Units whose task type is unknown before classification are counted as rewritten (an upper
    bound), and said so.
    """
    from realign.llm.pricing import StageEstimate, estimate, render_table

    req: Counter[str] = Counter()
    tin: Counter[str] = Counter()
    tout: Counter[str] = Counter()
    unknown_types = 0
    records = 0
    schema = classification_schema(pack)
    crit_list = [pack[n] for n in pack.names()]
    classify_fixed = sum(
        tokens.count(m.content)
        for m in prompts.render("classify", criteria=crit_list, context="", instruction="")
    )
    schema_tokens = tokens.count(str(schema.model_json_schema()))
    verify_prompt = prompts.render("verify", context="", instruction="", original="", rewrite="")
    verify_fixed = sum(tokens.count(m.content) for m in verify_prompt) + tokens.count(
        str(VerifyOutput.model_json_schema())
    )
    for item in items:
        if options.limit is not None and records >= options.limit:
            break
        records += 1
        if isinstance(item, Failure):
            continue
        for turn in item.assistant_turns():
            label = input_task_type(item, turn)
            task = label if (label in pack and not options.reclassify) else None
            if task is None:
                req["classify"] += 1
                tin["classify"] += (
                    classify_fixed
                    + schema_tokens
                    + tokens.count(item.instruction_for(turn) + context_text(item, turn))
                )
                tout["classify"] += CLASSIFY_OUTPUT_TOKENS
                if settings.classify_only:
                    continue
                unknown_types += 1
            if settings.classify_only:
                continue
            if skip_reason(
                pack, options, task, item.instruction_for(turn), item.turns[turn].content
            ):
                continue
            if task is not None:
                crit = pack[task]
            else:  # counted with the default's format text length as a guess
                crit = pack["default"] if "default" in pack else pack[pack.names()[0]]
            given = input_evidence(item, turn)  # ReAlign's precomputed evidence: no search
            searched = crit.retrieval and not given
            if searched:
                req["retrieve (search)"] += 1
            request = build_request(
                item,
                turn,
                crit,
                given,
                force=options.force,
                samples=options.samples,
                prompt=options.prompt,
                temperature=options.temperature,
            )
            n_in = sum(tokens.count(m.content) for m in request.messages) + 200  # schema
            if searched:
                n_in += 600  # evidence cap
            calls = 1 if options.samples == 1 else options.samples
            req["rewrite"] += calls
            tin["rewrite"] += n_in * calls
            original = item.turns[turn].content
            rewrite_tokens = min(
                output_budget(original, crit),
                int(1.5 * tokens.count(original)) + REASONING_TOKENS,
            )
            tout["rewrite"] += rewrite_tokens * options.samples
            if options.verify:  # every rewrite counted as passing the rules: an upper bound
                shown = item.instruction_for(turn) + context_text(item, turn) + original
                req["verify"] += 1
                tin["verify"] += verify_fixed + tokens.count(shown) + rewrite_tokens
                tout["verify"] += VERIFY_ESTIMATE_TOKENS
    stages = [
        StageEstimate(
            stage=s,
            requests=req[s],
            input_tokens=tin[s],
            output_tokens=tout[s] if s != "retrieve (search)" else 0,
        )
        for s in ("classify", "retrieve (search)", "rewrite", "verify")
        if req[s]
    ]
    report = estimate(
        pricing_model(settings.engine), [s for s in stages if not s.stage.startswith("retrieve")]
    )
    err.print(f"dry run: {records} records read from {settings.input}; no request was sent.")
    err.print(render_table(report))
    if req["retrieve (search)"]:
        err.print(f"search requests (priced by your search provider): {req['retrieve (search)']}")
    if req["verify"]:
        err.print(
            f"verify: {req['verify']} request(s), one per rewrite, counted as if the filter "
            "rules passed every rewrite (an upper bound)."
        )
    if unknown_types:
        err.print(
            f"{unknown_types} unit(s) have no task type yet: counted as classified and "
            "rewritten (an upper bound; `rewrite: no` types will cost less)."
        )
