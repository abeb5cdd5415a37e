"""Options shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from realign.pipeline.state import RunLock

INPUT = typer.Argument(..., help="Dataset file (.json, .jsonl, .parquet) or hf:NAME[:split].")
OUTPUT = typer.Option(..., "-o", "--output", help="Output file; its extension picks the file type.")
MODEL = typer.Option(
    None, help="Model name (default: gpt-4o-mini for OpenAI; the embedded SmolLM2 when local)."
)
BASE_URL = typer.Option(
    None,
    help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM, Ollama, llama.cpp).",
)
BACKEND = typer.Option(
    None,
    help="openai | local. Default: openai when OPENAI_API_KEY or a base URL is set, else the "
    "embedded local model.",
)
CRITERIA = typer.Option(
    None, help="Folder of your own criteria files; they override or extend the pack by name."
)
PACK = typer.Option("realign", help="Built-in criteria pack (or a folder used as the whole pack).")
RETRIEVAL = typer.Option(
    None,
    help="Evidence for `retrieval: yes` task types: google | serper | local:PATH | none. "
    "Default: google when GOOGLE_API_KEY and GOOGLE_CSE_ID are set, else none.",
)
SEARCH_ENDPOINT = typer.Option(None, help="Override the search provider's URL (proxies, tests).")
CONCURRENCY = typer.Option(
    None, min=1, help="Requests in flight at most (default: 32 hosted, 1 local)."
)
RPM = typer.Option(
    None, min=1, help="Requests per minute limit (when the provider sends no headers)."
)
TPM = typer.Option(None, min=1, help="Tokens per minute limit (estimated with tiktoken).")
# The name is spelled out: typer would otherwise offer the pair --no-cache/--no-no-cache.
NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the request cache.")
INPUT_FORMAT = typer.Option(
    None, help="items | sharegpt | alpaca | messages | fields (default: detected)."
)
OUTPUT_FORMAT = typer.Option(None, help="Output format (default: the input's).")
FIELDS = typer.Option(
    None,
    help="Field mapping for flat records, e.g. instruction=question,response=answer "
    "(implies --input-format fields).",
)

MAX_RECORD_MB = typer.Option(
    4.0,
    "--max-record-mb",
    min=0.001,
    help="Records larger than this (MB of UTF-8 JSON) are not read; they are named as failures.",
)


def split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def die(message: str, code: int = 2) -> typer.Exit:
    """Print an error for a person and return the Exit to raise."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def lock_output(output: Path) -> RunLock:
    """The run's lock on `output`, taken before anything is paid for; exit 2 when another
    process holds it."""
    from realign.pipeline.state import RunLocked, lock_run

    try:
        return lock_run(output)
    except RunLocked as e:
        raise die(str(e)) from None
