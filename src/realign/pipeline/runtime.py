"""Builds what a run needs from command-line settings: backend, engine, cache, retriever,
classifier, writer; and the `--dry-run` cost estimate. I/O and configuration live here so the
stage modules stay pure."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from realign import prompts, tokens
from realign.criteria import CriteriaPack
from realign.io.formats import input_evidence
from realign.llm.engine import Engine
from realign.pipeline.record import RunOptions, Stages
from realign.records import Failure, Record, input_task_type
from realign.stages.classify import classification_schema, context_text
from realign.stages.rewrite import build_request, output_budget

if TYPE_CHECKING:
    from realign.cli.run_impl import RunArgs

LOCAL_CONCURRENCY = 2  # llama.cpp serves one request at a time; one more keeps it busy
HOSTED_CONCURRENCY = 32
LOCAL_REQUEST_TIMEOUT_S = 900.0


@dataclass
class EngineArgs:
    """Options every command that calls an LLM shares (`run`, `classify`, `rephrase`, …)."""

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


@dataclass
class Runtime:
    stages: Stages
    window: int
    total_records: int | None
    open_writer: Callable[[Path], Any]
    closers: list[Callable[[], Any]]

    async def aclose(self) -> None:
        for close in self.closers:
            result = close()
            if hasattr(result, "__await__"):
                await result


def count_records(path: Path) -> int | None:
    """Cheap total for the progress bar: lines of a JSONL file, rows of a Parquet file."""
    try:
        if path.suffix == ".jsonl":
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except OSError:
        return None
    return None


def needs_llm(args: RunArgs) -> bool:
    """`classify --method embedding` without any configured LLM runs with no backend at all."""
    if not args.classify_only or args.classifier == "llm":
        return True
    from realign.config import load_settings

    s = load_settings({"backend": args.backend, "base_url": args.base_url})
    return bool(s.backend or s.base_url or s.api_key)


def make_backend(args: Any, err: Console) -> Any:
    """The backend from flags > environment > config file > defaults (see realign.config)."""
    from realign.cli.common import die
    from realign.config import ConfigError, load_settings
    from realign.llm.registry import resolve_backend

    try:
        settings = load_settings(
            {"backend": args.backend, "model": args.model, "base_url": args.base_url}
        )
        return resolve_backend(settings, stderr=err.file)
    except ConfigError as e:
        raise die(str(e)) from e


def make_retriever(args: RunArgs, engine: Engine | None, err: Console) -> Any:
    if args.classify_only:
        return None
    from realign.search.registry import default_retrieval_spec, make_provider
    from realign.stages.retrieve import Retriever

    spec = args.retrieval
    if spec is None:
        spec, message = default_retrieval_spec(os.environ)
        if message:
            err.print(message)
    provider = make_provider(
        spec,
        args.search_endpoint,
        google_api_key=os.environ.get("GOOGLE_API_KEY"),
        google_cse_id=os.environ.get("GOOGLE_CSE_ID"),
        serper_api_key=os.environ.get("SERPER_API_KEY"),
    )
    if provider is None:
        return None
    return Retriever(provider, engine, on_message=lambda m: err.print(f"[yellow]{m}[/]"))


def make_embedding(args: RunArgs, pack: CriteriaPack, err: Console) -> Any:
    if args.classifier != "embedding":
        return None
    from realign.stages.embedding import ClassifierUnavailable, EmbeddingClassifier

    try:
        return EmbeddingClassifier.for_pack(pack, on_train=err.print)
    except ClassifierUnavailable as e:
        from realign.cli.common import die

        raise die(f"{e}\ninstall the extra: pip install 'realign[classifier]'") from e


def make_engine(args: Any, err: Console) -> tuple[Engine, list[Callable[[], Any]]]:
    """The engine for these options (backend, cache, limits) and what to close after.

    `args` needs backend, model, base_url, concurrency, no_cache and optionally rpm, tpm,
    max_cost: every command that calls an LLM builds its engine here."""
    from realign.cli.common import die
    from realign.llm.cache import Cache

    backend = make_backend(args, err)
    cache = None if args.no_cache else Cache()
    batch = bool(getattr(args, "batch", False))
    if batch and (cache is None or backend.name != "openai"):
        raise die("--batch needs the openai backend and the cache (answers are collected into it)")
    concurrency = args.concurrency or (
        LOCAL_CONCURRENCY if backend.name == "local" else HOSTED_CONCURRENCY
    )
    try:
        engine = Engine(
            backend,
            concurrency=concurrency,
            cache=cache,
            # The embedded model queues requests on 2 cores: a long wait is not a failure.
            request_timeout=LOCAL_REQUEST_TIMEOUT_S if backend.name == "local" else 120.0,
            defer_to=[] if batch else None,
            batch_pricing=batch,
            **engine_limits(args),
        )
    except ValueError as e:  # e.g. --max-cost for a model without a price
        raise die(str(e)) from e
    closers: list[Callable[[], Any]] = [engine.aclose]
    if cache is not None:
        closers.append(cache.close)
    return engine, closers


def pricing_model(args: Any) -> str:
    """The model a run would use, for the `--dry-run` price ("local" is free)."""
    from realign.config import DEFAULT_OPENAI_MODEL, load_settings

    s = load_settings({"backend": args.backend, "model": args.model, "base_url": args.base_url})
    if s.model:
        return s.model
    if s.backend == "local" or (not s.backend and not s.api_key and not s.base_url):
        return "local"
    return DEFAULT_OPENAI_MODEL


def build_runtime(args: RunArgs, pack: CriteriaPack, options: RunOptions, err: Console) -> Runtime:
    from realign.io.write import RecordWriter
    from realign.search.base import SearchError

    engine: Engine | None = None
    closers: list[Callable[[], Any]] = []
    if needs_llm(args):
        engine, closers = make_engine(args, err)
    try:
        retriever = make_retriever(args, engine, err)
    except SearchError as e:
        from realign.cli.common import die

        raise die(str(e)) from e
    backend = engine.backend if engine is not None else None
    stages = Stages(
        pack=pack,
        engine=engine,
        options=options,
        embedding=make_embedding(args, pack, err),
        retriever=retriever,
        model=getattr(backend, "model", None),
        backend=getattr(backend, "name", None),
    )
    window = max(4 * (engine.limit.maximum if engine is not None else 1), 16)

    def open_writer(path: Path) -> RecordWriter:
        # Flat records go back out through the same mapping they came in with.
        return RecordWriter(path, args.output_format, fields=args.fields, source_fields=args.fields)

    return Runtime(stages, window, count_records(args.input), open_writer, closers)


def engine_limits(args: RunArgs) -> dict[str, Any]:
    """Only the limits the user set, so the engine's own defaults apply otherwise."""
    out: dict[str, Any] = {}
    for name in ("rpm", "tpm", "max_cost"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


# ---------------------------------------------------------------- dry run


CLASSIFY_OUTPUT_TOKENS = 40
REASONING_TOKENS = 60


def estimate_run(
    args: RunArgs,
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
                if args.classify_only:
                    continue
                unknown_types += 1
            if args.classify_only:
                continue
            crit = pack[task] if task else None
            if crit is not None and not crit.rewrite:
                continue
            if options.tasks is not None and task is not None and task not in options.tasks:
                continue
            if crit is None:  # count it with the default's format text length as a guess
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
            tout["rewrite"] += (
                min(
                    output_budget(original, crit),
                    int(1.5 * tokens.count(original)) + REASONING_TOKENS,
                )
                * options.samples
            )
    stages = [
        StageEstimate(
            stage=s,
            requests=req[s],
            input_tokens=tin[s],
            output_tokens=tout[s] if s != "retrieve (search)" else 0,
        )
        for s in ("classify", "retrieve (search)", "rewrite")
        if req[s]
    ]
    report = estimate(
        pricing_model(args), [s for s in stages if not s.stage.startswith("retrieve")]
    )
    err.print(f"dry run: {records} records read from {args.input}; no request was sent.")
    err.print(render_table(report))
    if req["retrieve (search)"]:
        err.print(f"search requests (priced by your search provider): {req['retrieve (search)']}")
    if unknown_types:
        err.print(
            f"{unknown_types} unit(s) have no task type yet: counted as classified and "
            "rewritten (an upper bound; `rewrite: no` types will cost less)."
        )
