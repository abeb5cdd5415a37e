"""`realign judge` (pointwise scores or a pairwise comparison) and `realign report`."""

from __future__ import annotations

from pathlib import Path

import typer

from realign.cli import common, options

JUDGE_HELP = """Judge responses with an LLM.

**One input: pointwise scores.** Each response gets a 1-10 score and a short rationale per
aspect. **Two inputs A B: pairwise comparison.** Records are matched by id (or by instruction
text when ids differ; unmatched ones are listed); each pair is judged in both orders per
aspect, and a verdict that flips with the order counts as a tie. Outcomes are for B against A
(win = B better), overall and per task type, with bootstrap 95% intervals. Beside the raw win
rate stands the **length-controlled** win rate (AlpacaEval 2 style): judges favour longer
answers, so it is read from a logistic model of each outcome on the two answers' length
difference, at zero difference. **Three or more inputs:** every pair is compared (or each
against `--baseline`), and each dataset gets a Bradley-Terry rating (Elo scale) per aspect.

`--dry-run` prints the requests, tokens and dollars and sends nothing; `--max-cost` stops
cleanly before spending more (rerun to resume).

Aspects: `alignment` (does what the request asks, judged against the request alone, never
against realign's own criteria), `factuality` (uses the `--reference` answer matched by record
id when given; a list answer needs every line), `readability` (well-organised length is not a
fault). Reference metrics that need no LLM (gold-answer containment, math final answers,
tokens, format features) are shown beside the verdicts. A judge model whose output is
degenerate (all ties, one score for everything, rationales like "][") is named with a
warning, and the reasons are listed in the output's `judge_warnings`. A stopped run (Ctrl-C,
a provider that stays down) resumes: rerun the same command and the answers already received
are not asked for again, even with `--no-cache`.

Examples:

    realign judge out.json -o scores.json --aspects alignment,readability
    realign judge original.json realigned.json -o cmp.json --html cmp.html
    realign judge original.json realigned.json -o cmp.json --dry-run
    realign judge orig.json v1.json v2.json -o cmp.json --baseline orig.json
    realign judge a.json b.json --reference gold.json -o cmp.json \\
        --base-url http://127.0.0.1:8000/v1 --model my-model
"""

REPORT_HELP = """Write a self-contained HTML report (no network needed to view it).

Give it a `realign run` output to browse original vs realigned responses side by side (word
diff, status, filter decision) with statistics, without judging; or a COMPARISON.json /
SCORES.json written by `realign judge` to redraw its report.

Examples:

    realign report out.json --html report.html
    realign report out.json --html report.html --reference gold.json
    realign report cmp.json --html cmp.html
"""

OUTPUT = typer.Option(..., "-o", "--output", help="Where to write the results (JSON).")
ASPECTS = typer.Option("alignment,factuality,readability", help="Comma-separated aspects to judge.")
REFERENCE = typer.Option(
    None,
    help="Dataset of reference answers (its responses), matched by record id, else by "
    "instruction. Used by the factuality rubric and for gold-answer containment; an answer "
    "may list alternatives one per line, or the items of a list answer (every one needed) "
    "when the request asks for several things.",
)
HTML = typer.Option(None, "--html", help="Also write a self-contained HTML report here.")
INPUTS = typer.Argument(
    ..., help="One dataset (scores), two, A then B (comparison), or more (ratings)."
)
BASELINE = typer.Option(
    None,
    help="With three or more inputs: compare each input with this one only (one of the "
    "inputs), instead of every pair.",
)
REPORT_INPUT = typer.Argument(..., help="A `realign run` output, or a judge output JSON.")
REPORT_HTML = typer.Option(..., "--html", help="Where to write the HTML report.")


def register(app: typer.Typer) -> None:
    @app.command(help=JUDGE_HELP, no_args_is_help=True)
    def judge(
        inputs: list[Path] = INPUTS,
        output: Path = OUTPUT,
        aspects: str = ASPECTS,
        reference: Path | None = REFERENCE,
        html: Path | None = HTML,
        model: str | None = typer.Option(
            None,
            help="Judge model (default gpt-4o; the embedded model with --backend local).",
        ),
        base_url: str | None = options.BASE_URL,
        backend: str | None = options.BACKEND,
        criteria: Path | None = options.CRITERIA,
        pack: str = options.PACK,
        concurrency: int | None = options.CONCURRENCY,
        no_cache: bool = options.NO_CACHE,
        limit: int | None = typer.Option(
            None, min=1, help="Only the first N records of each input."
        ),
        resamples: int = typer.Option(1000, min=100, help="Bootstrap resamples for the intervals."),
        seed: int = typer.Option(0, help="Bootstrap seed (same seed, same intervals)."),
        baseline: Path | None = BASELINE,
        max_cost: float | None = options.MAX_COST,
        dry_run: bool = options.DRY_RUN,
        input_format: str | None = options.INPUT_FORMAT,
        fields: str | None = options.FIELDS,
    ) -> None:
        params = dict(locals())  # before the import adds names
        from realign.cli.judge_run import judge_command

        with common.usage_errors():
            code = judge_command(**params)
        raise typer.Exit(code)

    @app.command(help=REPORT_HELP, no_args_is_help=True)
    def report(
        input: Path = REPORT_INPUT,
        html: Path = REPORT_HTML,
        reference: Path | None = REFERENCE,
        max_rows: int = typer.Option(5000, min=1, help="Responses shown in the diff view."),
        input_format: str | None = options.INPUT_FORMAT,
        fields: str | None = options.FIELDS,
    ) -> None:
        params = dict(locals())  # before the import adds names
        from realign.cli.judge_run import report_command

        with common.usage_errors():
            code = report_command(**params)
        raise typer.Exit(code)
