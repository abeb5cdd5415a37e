"""`realign rephrase`, `realign generate`, `realign filter`: augment beyond reformatting.

The work is done in `augment_run.py` / `filter_run.py`; this module only declares the options.
"""

from __future__ import annotations

from pathlib import Path

import typer

from realign.cli import common, options

DOCS = typer.Argument(
    ...,
    help="Documents: .jsonl / .json / .parquet with a text field, a .txt / .md file, or a "
    "folder of them.",
)
TEXT_FIELD = typer.Option(
    None, help="Field holding the text (default: the first of text, content, document, body)."
)
ID_FIELD = typer.Option("id", help="Field holding the document id (default: its position).")
MAX_CHUNK_TOKENS = typer.Option(
    300, help="Chunks hold at most this many tokens (WRAP: longer pieces lose information)."
)
LIMIT_CHUNKS = typer.Option(None, min=1, help="Only the first N chunks.")
REFERENCE = typer.Option(None, help="Reference answers (same format) for --aspect factuality.")
JSONL_OUTPUT = typer.Option(..., "-o", "--output", help="Output JSON Lines file (*.jsonl).")

REPHRASE_HELP = """Rephrase documents WRAP-style ("Rephrasing the Web", Maini et al. 2024).

Documents are cut into chunks of at most ~300 tokens and each chunk is rephrased in each
chosen style. The styles are the `wrap` criteria pack (easy, medium, hard, qa); each style's
Markdown body is the instruction, so edit or add styles with `--criteria DIR`
(`realign criteria show easy --pack wrap`). Each output line is
`{"id", "doc_id", "chunk", "style", "synthetic": true, "text", "source_text"}`.

With `--mix 1:1` the output is the training mix instead: real chunks (`style: "original"`,
`synthetic: false`) and rephrasings interleaved at that ratio; the shorter side is repeated
so nothing is left out. Failures go to `<OUT stem>.failures.jsonl`; rerun to resume.

Examples:

    realign rephrase examples/docs -o wrap.jsonl --styles easy,qa \\
        --backend local --limit 2
    realign rephrase docs.jsonl -o mix.jsonl --styles medium --mix 1:1 \\
        --model gpt-4o-mini
    realign rephrase docs.parquet -o wrap.jsonl --dry-run   # cost, no request
"""

GENERATE_HELP = """Generate instruction/response pairs grounded in documents.

Documents are cut into chunks (≤ 300 tokens) and the model writes `--per-chunk N` pairs from
each, answered only from the chunk. With `--typed` each pair gets a task type of the criteria
pack (constrained to its names; unknown names become `default`), stored as the user turn's
`category`, so `realign run` reformats the pairs without classifying them again. Near-duplicate
instructions are removed (first kept) into `<OUT stem>.duplicates.jsonl`; the link to the
source is in each record's `realign.generated` (doc_id, chunk, pair).

Examples:

    realign generate examples/docs -o pairs.json --per-chunk 2 \\
        --backend local --limit 2
    realign generate docs.jsonl -o pairs.jsonl --per-chunk 5 --typed \\
        --output-format sharegpt
    realign run pairs.json -o pairs.realigned.json   # then reformat them
"""

FILTER_HELP = """Keep only the records a judge scores high enough (phi-1 style quality filtering).

Each assistant turn is scored 1-10 by the pointwise judge of `realign judge` on the chosen
aspect(s): educational_value (would a student learn from it, as from a good textbook?),
alignment, factuality or readability (see `realign judge --help`). A record is kept when every
turn reaches `--min-score` on every aspect. Kept records go to OUTPUT, dropped ones to
`<OUTPUT stem>.dropped.jsonl`, both in the input's format with the scores and the judge's
rationale under `realign.scores` / `realign.quality_filter`: nothing vanishes. A table shows
kept / dropped per task type.

Examples:

    realign filter pairs.json -o good.json --aspect educational_value \\
        --min-score 7
    realign filter data.jsonl -o good.jsonl --aspect factuality,readability \\
        --min-score 6
    realign filter data.json -o good.json --dry-run   # cost, no request
"""


def register(app: typer.Typer) -> None:
    @app.command(help=REPHRASE_HELP, no_args_is_help=True)
    def rephrase(
        input: Path = DOCS,
        output: Path = JSONL_OUTPUT,
        styles: str = typer.Option(
            "easy,medium,hard,qa", help="Styles (criteria names of the pack), comma-separated."
        ),
        mix: str | None = typer.Option(
            None, help="Write the real:synthetic training mix at this ratio, e.g. 1:1."
        ),
        source_text: bool = typer.Option(
            True, help="Put each rephrasing's source chunk in `source_text`."
        ),
        max_chunk_tokens: int = MAX_CHUNK_TOKENS,
        text_field: str | None = TEXT_FIELD,
        id_field: str = ID_FIELD,
        pack: str = typer.Option("wrap", help="Criteria pack holding the styles."),
        criteria: Path | None = options.CRITERIA,
        model: str | None = options.MODEL,
        base_url: str | None = options.BASE_URL,
        backend: str | None = options.BACKEND,
        limit: int | None = LIMIT_CHUNKS,
        concurrency: int | None = options.CONCURRENCY,
        rpm: int | None = options.RPM,
        tpm: int | None = options.TPM,
        max_cost: float | None = options.MAX_COST,
        dry_run: bool = options.DRY_RUN,
        no_cache: bool = options.NO_CACHE,
    ) -> None:
        params = dict(locals())  # before the import adds names
        from realign.cli.augment_run import RephraseArgs, rephrase_command

        with common.usage_errors():
            code = rephrase_command(RephraseArgs(**params))
        raise typer.Exit(code)

    @app.command(help=GENERATE_HELP, no_args_is_help=True)
    def generate(
        input: Path = DOCS,
        output: Path = options.OUTPUT,
        per_chunk: int = typer.Option(3, min=1, max=20, help="Pairs to write per chunk."),
        typed: bool = typer.Option(
            False, help="Give each pair a task type of the criteria pack (for `realign run`)."
        ),
        output_format: str = typer.Option(
            "items", help="items | sharegpt | alpaca | messages (file type from the extension)."
        ),
        dedup_threshold: float = typer.Option(
            0.8, help="Instructions at least this similar (word 3-gram Jaccard) are duplicates."
        ),
        max_chunk_tokens: int = MAX_CHUNK_TOKENS,
        text_field: str | None = TEXT_FIELD,
        id_field: str = ID_FIELD,
        pack: str = options.PACK,
        criteria: Path | None = options.CRITERIA,
        model: str | None = options.MODEL,
        base_url: str | None = options.BASE_URL,
        backend: str | None = options.BACKEND,
        limit: int | None = LIMIT_CHUNKS,
        concurrency: int | None = options.CONCURRENCY,
        rpm: int | None = options.RPM,
        tpm: int | None = options.TPM,
        max_cost: float | None = options.MAX_COST,
        dry_run: bool = options.DRY_RUN,
        no_cache: bool = options.NO_CACHE,
    ) -> None:
        params = dict(locals())  # before the import adds names
        from realign.cli.augment_run import GenerateArgs, generate_command

        with common.usage_errors():
            code = generate_command(GenerateArgs(**params))
        raise typer.Exit(code)

    @app.command(name="filter", help=FILTER_HELP, no_args_is_help=True)
    def filter_(
        input: Path = options.INPUT,
        output: Path = options.OUTPUT,
        aspect: str = typer.Option(
            "educational_value",
            help="Judge aspect(s), comma-separated: educational_value, alignment, factuality, "
            "readability.",
        ),
        min_score: int = typer.Option(7, min=1, max=10, help="Keep records scoring at least this."),
        reference: Path | None = REFERENCE,
        pack: str = options.PACK,
        criteria: Path | None = options.CRITERIA,
        model: str | None = options.MODEL,
        base_url: str | None = options.BASE_URL,
        backend: str | None = options.BACKEND,
        limit: int | None = options.LIMIT,
        concurrency: int | None = options.CONCURRENCY,
        rpm: int | None = options.RPM,
        tpm: int | None = options.TPM,
        max_cost: float | None = options.MAX_COST,
        dry_run: bool = options.DRY_RUN,
        no_cache: bool = options.NO_CACHE,
        input_format: str | None = options.INPUT_FORMAT,
        output_format: str | None = options.OUTPUT_FORMAT,
        fields: str | None = options.FIELDS,
    ) -> None:
        params = dict(locals())  # before the import adds names
        from realign.cli.filter_run import FilterArgs, filter_command

        with common.usage_errors():
            code = filter_command(FilterArgs(**params))
        raise typer.Exit(code)
