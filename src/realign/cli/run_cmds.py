"""`realign run` and `realign classify`."""

from __future__ import annotations

from pathlib import Path

import typer

from realign.cli import common

RUN_HELP = """Realign a dataset: classify each instruction, rewrite responses to their task type's
format criterion (grounded by evidence where the criterion says `retrieval: yes`), and keep the
original wherever the filter rules say the rewrite could be worse.

The output keeps the input's format; each record gets a `realign` key with the task type,
status (rewritten / kept / skipped), the original response, the candidates, the filter decision
and provenance. Records that fail go to `<OUTPUT stem>.failures.jsonl`. Rerun the same command
after a crash to resume.

Examples:

    realign run data.json -o out.json                       # embedded model, offline
    realign run data.json -o out.json --model gpt-4o-mini   # OpenAI (OPENAI_API_KEY)
    realign run data.jsonl -o out.jsonl --base-url http://127.0.0.1:8000/v1 --model my-model
    realign run gsm8k.jsonl -o out.jsonl --fields instruction=question,response=answer --force
    realign run data.json -o out.json --dry-run             # cost estimate, no request
"""


def register(app: typer.Typer) -> None:
    @app.command(help=RUN_HELP, no_args_is_help=True)
    def run(
        input: Path = common.INPUT,
        output: Path = common.OUTPUT,
        model: str | None = common.MODEL,
        base_url: str | None = common.BASE_URL,
        backend: str | None = common.BACKEND,
        criteria: Path | None = common.CRITERIA,
        pack: str = common.PACK,
        tasks: str | None = typer.Option(
            None, help="Only rewrite these task types (comma-separated); others pass through."
        ),
        samples: int = typer.Option(1, min=1, max=16, help="Rewrite candidates per response."),
        selection: str = typer.Option(
            "longest", help="How to pick among candidates: longest|first."
        ),
        force: bool = typer.Option(
            False,
            help="Rewrite even `rewrite: no` types and ill-fitting formats (ReAlign's math mode).",
        ),
        reclassify: bool = typer.Option(
            False, help="Classify even records whose input already gives a task type."
        ),
        classifier: str = typer.Option("llm", help="Task classifier: llm | embedding (offline)."),
        min_confidence: float = typer.Option(
            0.5, help="With --classifier embedding: below this, fall back to the LLM classifier."
        ),
        retrieval: str | None = common.RETRIEVAL,
        search_endpoint: str | None = common.SEARCH_ENDPOINT,
        limit: int | None = typer.Option(None, min=1, help="Only the first N records."),
        concurrency: int = common.CONCURRENCY,
        rpm: int | None = common.RPM,
        tpm: int | None = common.TPM,
        max_cost: float | None = typer.Option(
            None, help="Stop cleanly (resumable) before spending more than this many USD."
        ),
        dry_run: bool = typer.Option(
            False, help="Print requests, tokens and cost per stage; make no request."
        ),
        batch: bool = typer.Option(
            False,
            help="Use the OpenAI Batch API (half price, answers within 24 h): each run submits "
            "what the next stage needs; `realign batch collect` fetches the answers into the "
            "cache; rerun the same command to go on.",
        ),
        no_cache: bool = common.NO_CACHE,
        input_format: str | None = common.INPUT_FORMAT,
        output_format: str | None = common.OUTPUT_FORMAT,
        fields: str | None = common.FIELDS,
        engine: str = typer.Option(
            "local", help="local (one process) | ray (Ray Data workers, one shared rate budget)."
        ),
        address: str | None = typer.Option(
            None, help="With --engine ray: a cluster (auto, ray://HOST:10001); default: local."
        ),
        workers: int | None = typer.Option(
            None, min=1, help="With --engine ray: worker processes (default 2)."
        ),
    ) -> None:
        options = dict(locals())
        from realign.cli.run_impl import RunArgs, run_command

        raise typer.Exit(run_command(RunArgs(**options)))

    @app.command(no_args_is_help=True)
    def classify(
        input: Path = common.INPUT,
        output: Path = common.OUTPUT,
        method: str = typer.Option("llm", help="llm (any backend) | embedding (offline, fast)."),
        min_confidence: float = typer.Option(
            0.5,
            help="With --method embedding: below this, ask the LLM when one is configured "
            "(--backend/--base-url/OPENAI_API_KEY), else use `default` with the reason.",
        ),
        reclassify: bool = typer.Option(
            False, help="Classify even records whose input already gives a task type."
        ),
        model: str | None = common.MODEL,
        base_url: str | None = common.BASE_URL,
        backend: str | None = common.BACKEND,
        criteria: Path | None = common.CRITERIA,
        pack: str = common.PACK,
        limit: int | None = typer.Option(None, min=1, help="Only the first N records."),
        concurrency: int = common.CONCURRENCY,
        no_cache: bool = common.NO_CACHE,
        input_format: str | None = common.INPUT_FORMAT,
        output_format: str | None = common.OUTPUT_FORMAT,
        fields: str | None = common.FIELDS,
    ) -> None:
        """Add task types only (no rewriting). Each unit gets `task_type`, its source and reason.

        Example: `realign classify data.json -o typed.json --method embedding`
        """
        options = {k: v for k, v in locals().items() if k != "method"}
        from realign.cli.run_impl import RunArgs, run_command

        args = RunArgs(**options, classifier=method, classify_only=True)
        raise typer.Exit(run_command(args))
