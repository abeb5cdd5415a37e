"""`realign run` and `realign classify`."""

from __future__ import annotations

from pathlib import Path

import typer

from realign.cli import options

RUN_HELP = """Realign a dataset: classify each instruction, rewrite responses to their task type's
format criterion (grounded by evidence where the criterion says `retrieval: yes`), and keep the
original wherever the filter rules say the rewrite could be worse.

The output keeps the input's format; each record gets a `realign` key with the task type,
status (rewritten / kept / skipped), the original response, the candidates, the filter decision
and provenance. Records that fail go to `<OUTPUT stem>.failures.jsonl`. Rerun the same command
after a crash to resume.

Examples:

    realign run data.json -o out.json               # embedded model, offline
    realign run data.json -o out.json --dry-run     # cost estimate, no request
    realign run data.json -o out.json --model gpt-4o-mini    # OPENAI_API_KEY
    realign run data.jsonl -o out.jsonl --model my-model \\
        --base-url http://127.0.0.1:8000/v1
    realign run gsm8k.jsonl -o out.jsonl --force --filter-preset gsm8k \\
        --fields instruction=question,response=answer
    realign run realign.json -o out.json --pack realign-paper  # as in the paper
    realign run data.json -o out.json --model gpt-4o-mini --verify
    realign run data.json -o out.json --show-prompt 3     # what would be sent
"""

VERIFY_HELP = (
    "After the filter rules pass a rewrite, one more request asks the model whether the "
    "rewrite keeps every fact, number, verdict and code of the original and answers the "
    "request; a no keeps the original (rule verify, with the model's reason). Cached, "
    "counted in --dry-run and --max-cost, works with --batch and --engine ray. "
    "[default: the pack's `verify:` (pack.yaml), else off; with the embedded model only "
    "an explicit --verify turns it on]"
)

FILTER_PRESET_HELP = (
    "Filter rules to apply, after ReAlign's per-dataset selection; every preset first "
    "rejects an unchanged copy (unchanged) and refusals or leaked rewriting text "
    "(meta_text). default: planning only when asked for, length >= 0.5x the original, "
    "code neither lost nor added, the final answer (#### N, \\boxed{}, math's last number) "
    "kept, a short answer (<= 8 words, or a stated 'the answer is …') kept, single letters "
    "case-sensitive. open-platypus: short answer, code, length. no-robots: no rewrite of "
    "default, planning only when asked for, code, length. gsm8k: #### N kept, length. "
    "math: math_puzzles needs a number in the question, final answer kept, length. "
    "alpaca: an exam original of <= 5 characters kept, code, length. "
    "[default: the pack's, else default]"
)


def register(app: typer.Typer) -> None:
    @app.command(help=RUN_HELP, no_args_is_help=True)
    def run(
        ctx: typer.Context,
        input: Path = options.INPUT,
        output: Path = options.OUTPUT,
        model: str | None = options.MODEL,
        base_url: str | None = options.BASE_URL,
        backend: str | None = options.BACKEND,
        criteria: Path | None = options.CRITERIA,
        pack: str = options.PACK,
        tasks: str | None = typer.Option(
            None, help="Only rewrite these task types (comma-separated); others pass through."
        ),
        samples: int | None = typer.Option(
            None,
            min=1,
            max=16,
            help="Rewrite candidates per response [default: the pack's, else 1].",
            show_default=False,
        ),
        selection: str | None = typer.Option(
            None,
            help="How to pick among candidates: longest|first [default: the pack's, else longest].",
            show_default=False,
        ),
        temperature: float | None = typer.Option(
            None,
            min=0.0,
            max=2.0,
            help="Rewrite sampling temperature [default: the pack's, else 0 for one sample and "
            "0.7 for several].",
            show_default=False,
        ),
        force: bool = typer.Option(
            False,
            help="Rewrite even when the model judges the format a poor fit for the request "
            "(ReAlign's math mode). `rewrite: no` types are still skipped, and an unchanged "
            "copy is reported as kept (rule unchanged), not rewritten.",
        ),
        filter_preset: str | None = typer.Option(
            None,
            help=FILTER_PRESET_HELP,
            metavar="default|open-platypus|alpaca|no-robots|gsm8k|math",
            show_default=False,
        ),
        verify: bool | None = typer.Option(None, "--verify/--no-verify", help=VERIFY_HELP),
        reclassify: bool = typer.Option(
            False, help="Classify even records whose input already gives a task type."
        ),
        classifier: str = typer.Option("llm", help="Task classifier: llm | embedding (offline)."),
        min_confidence: float = typer.Option(
            0.5,
            min=0.0,
            max=1.0,
            help="With --classifier embedding: below this, fall back to the LLM classifier.",
        ),
        retrieval: str | None = options.RETRIEVAL,
        search_endpoint: str | None = options.SEARCH_ENDPOINT,
        limit: int | None = options.LIMIT,
        concurrency: int | None = options.CONCURRENCY,
        rpm: int | None = options.RPM,
        tpm: int | None = options.TPM,
        max_cost: float | None = options.MAX_COST,
        dry_run: bool = typer.Option(
            False,
            help="Print requests, tokens and cost per stage, and the records the run could not "
            "read; make no request. Exits as the run would: 1 when a record cannot be read.",
        ),
        batch: bool = typer.Option(
            False,
            help="Use the OpenAI Batch API (half price, answers within 24 h): each run submits "
            "what the next stage needs; `realign batch collect` fetches the answers into the "
            "cache; rerun the same command to go on.",
        ),
        no_cache: bool = options.NO_CACHE,
        input_format: str | None = options.INPUT_FORMAT,
        output_format: str | None = options.OUTPUT_FORMAT,
        fields: str | None = options.FIELDS,
        max_record_mb: float = options.MAX_RECORD_MB,
        engine: str = typer.Option(
            "local", help="local (one process) | ray (Ray worker processes, one shared rate budget)."
        ),
        address: str | None = typer.Option(
            None, help="With --engine ray: a cluster (auto, ray://HOST:10001); default: local."
        ),
        workers: int | None = typer.Option(
            None, min=1, help="With --engine ray: worker processes (default 2)."
        ),
        show_prompt: str | None = typer.Option(
            None,
            "--show-prompt",
            metavar="ID",
            help="Print the exact messages the rewrite of record ID would send (task type, "
            "criterion, evidence, prompt) and send nothing; ID is the record's id or, for "
            "records without one, its 0-based position.",
        ),
    ) -> None:
        params = dict(locals())  # before the import adds names
        from realign.cli.common import invoked_command
        from realign.cli.run_impl import RunArgs, run_command

        ctx = params.pop("ctx")
        raise typer.Exit(run_command(RunArgs(**params, command=invoked_command(ctx))))

    @app.command(no_args_is_help=True)
    def classify(
        ctx: typer.Context,
        input: Path = options.INPUT,
        output: Path = options.OUTPUT,
        method: str = typer.Option("llm", help="llm (any backend) | embedding (offline, fast)."),
        min_confidence: float = typer.Option(
            0.5,
            min=0.0,
            max=1.0,
            help="With --method embedding: below this, ask the LLM when one is configured "
            "(--backend/--base-url/OPENAI_API_KEY), else use `default` with the reason.",
        ),
        reclassify: bool = typer.Option(
            False, help="Classify even records whose input already gives a task type."
        ),
        model: str | None = options.MODEL,
        base_url: str | None = options.BASE_URL,
        backend: str | None = options.BACKEND,
        criteria: Path | None = options.CRITERIA,
        pack: str = options.PACK,
        limit: int | None = options.LIMIT,
        concurrency: int | None = options.CONCURRENCY,
        no_cache: bool = options.NO_CACHE,
        input_format: str | None = options.INPUT_FORMAT,
        output_format: str | None = options.OUTPUT_FORMAT,
        fields: str | None = options.FIELDS,
        max_record_mb: float = options.MAX_RECORD_MB,
    ) -> None:
        """Add task types only (no rewriting). Each unit gets `task_type`, its source and reason.

        Example: `realign classify data.json -o typed.json --method embedding`
        """
        params = {k: v for k, v in locals().items() if k not in ("method", "ctx")}
        from realign.cli.common import invoked_command
        from realign.cli.run_impl import RunArgs, run_command

        command = invoked_command(ctx)
        args = RunArgs(**params, classifier=method, classify_only=True, command=command)
        raise typer.Exit(run_command(args))
