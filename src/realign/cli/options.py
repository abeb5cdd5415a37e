"""The options several commands share, so every command spells them (and their defaults)
the same way. The engine options' defaults are `realign.llm.build`'s."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from realign.llm.build import CONCURRENCY_HELP, EngineOptions

INPUT = typer.Argument(
    ...,
    help="Dataset file (.json, .jsonl, .parquet), hf:NAME[:split], or a folder saved with "
    "`datasets` (DIR[:SPLIT]).",
)
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
    help="openai | langchain | local. Default: openai (direct HTTP) when OPENAI_API_KEY or a "
    "base URL is set, else the embedded local model; langchain: the same server through "
    "LangChain's ChatOpenAI.",
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
CONCURRENCY = typer.Option(None, min=1, help=CONCURRENCY_HELP)
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
    "(also input=, system=, id=, task_type=; a key may be a path such as "
    "instances.0.output). Implies --input-format fields.",
)

MAX_RECORD_MB = typer.Option(
    4.0,
    "--max-record-mb",
    min=0.001,
    help="Records larger than this (MB of UTF-8 JSON) are not read; they are named as failures.",
)


MAX_COST = typer.Option(
    None, min=0.0, help="Stop cleanly (resumable) before spending more than this many USD."
)
DRY_RUN = typer.Option(
    False,
    help="Print requests, tokens and cost, and what the run could not read; make no request. "
    "Exits as the run would: 1 when an input cannot be read.",
)
LIMIT = typer.Option(None, min=1, help="Only the first N records.")


@dataclass
class EngineArgs:
    """The flags every command that calls a model shares, as typer hands them over; turned
    into the typed `EngineOptions` at this edge."""

    input: Path
    output: Path
    model: str | None = None
    base_url: str | None = None
    backend: str | None = None
    limit: int | None = None
    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_cost: float | None = None
    dry_run: bool = False
    no_cache: bool = False

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            backend=self.backend,
            model=self.model,
            base_url=self.base_url,
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            max_cost=self.max_cost,
            no_cache=self.no_cache,
        )
