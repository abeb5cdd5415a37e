"""Builds what a run needs from its typed settings: engine, retriever, classifier, writer.
I/O and configuration live here so the stage modules stay pure. The CLI converts its flags
into `RunSettings` at its edge; the Python API and the Ray workers build from the same."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from realign.credentials import Credentials
from realign.criteria import CriteriaPack
from realign.errors import UsageError
from realign.llm.build import EngineOptions, build_engine, close_all, llm_configured
from realign.llm.engine import Engine
from realign.pipeline.inputs import DEFAULT_MAX_RECORD_MB
from realign.pipeline.record import RunOptions, Stages


@dataclass(frozen=True)
class RunSettings:
    """Where a `run` / `classify` reads and writes, and what it builds its stages from."""

    input: Path
    output: Path
    engine: EngineOptions = field(default_factory=EngineOptions)
    classifier: str = "llm"  # llm | embedding
    classify_only: bool = False
    retrieval: str | None = None  # None: google when its keys are set, else none
    search_endpoint: str | None = None
    # the pack's search parameters (`PackSettings.search_options`: country, language, style)
    search_options: dict[str, Any] = field(default_factory=dict)
    input_format: str | None = None
    output_format: str | None = None
    fields: str | None = None
    max_record_mb: float = DEFAULT_MAX_RECORD_MB
    distributed: bool = False  # --engine ray
    address: str | None = None
    workers: int | None = None
    command: str | None = None  # the command line, for provenance
    # The search keys handed over by a Ray run's driver (None each: this process's
    # environment). SecretStr values: this object's repr never shows them.
    credentials: Credentials = field(default_factory=Credentials)


@dataclass
class Runtime:
    stages: Stages
    window: int
    total_records: int | None
    open_writer: Callable[[Path], Any]
    closers: list[Callable[[], Any]]

    async def aclose(self) -> None:
        await close_all(self.closers)


def count_records(path: Path) -> int | None:
    """Cheap total for the progress bar: lines of a JSONL file, rows of a Parquet file."""
    from realign.io.compress import compression, data_type

    try:
        if path.suffix == ".jsonl" and compression(path) is None and path.is_file():
            with path.open("rb") as f:
                # .json content saved as .jsonl is read as .json: its lines are not its records
                head = f.read(4096).lstrip()
                if head.startswith(b"[") or head.split(b"\n", 1)[0].strip() == b"{":
                    return None
                f.seek(0)
                return sum(1 for line in f if line.strip())
        if data_type(path) == ".parquet" and path.is_file():
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # a bad file: the reader reports it
        return None
    return None


def count_json_records(path: Path) -> int | None:
    """The records of a .json array, or of a compressed .json / .jsonl file, by reading it
    through (C-speed decoding, but a whole pass over the file): meant for a thread while the
    run starts (`run_job(late_total=…)`), when `count_records` had no cheap total."""
    from realign.io.compress import compression, data_type
    from realign.io.read import read_objects

    kind = data_type(path)
    readable = kind == ".json" or (kind == ".jsonl" and compression(path) is not None)
    if not readable or not path.is_file():
        return None
    try:
        return sum(1 for _ in read_objects(path))
    except Exception:  # the run itself reports an unreadable input; the total is a nicety
        return None


def needs_llm(settings: RunSettings) -> bool:
    """`classify --method embedding` without any configured LLM runs with no backend at all."""
    if not settings.classify_only or settings.classifier == "llm":
        return True
    return llm_configured(settings.engine)


def make_retriever(settings: RunSettings, engine: Engine | None, err: Console) -> Any:
    if settings.classify_only:
        return None
    from realign.search.base import SearchError
    from realign.search.registry import default_retrieval_spec, make_provider
    from realign.stages.retrieve import Retriever

    spec = settings.retrieval
    if spec is None:
        spec, message = default_retrieval_spec(os.environ)
        if message:
            err.print(message)
    keys = settings.credentials
    try:
        provider = make_provider(
            spec,
            settings.search_endpoint,
            google_api_key=keys.value("google_api_key") or os.environ.get("GOOGLE_API_KEY"),
            google_cse_id=os.environ.get("GOOGLE_CSE_ID"),
            serper_api_key=keys.value("serper_api_key") or os.environ.get("SERPER_API_KEY"),
            options=settings.search_options,
        )
    except SearchError as e:
        if settings.distributed and e.kind == "auth":
            return None  # a Ray run's driver searches nothing: the cluster's workers hold the keys
        raise UsageError(str(e)) from e
    if provider is None:
        return None
    return Retriever(
        provider,
        engine,
        on_message=lambda m: err.print(f"[yellow]{m}[/]"),
        whole_instruction=settings.search_options.get("style") == "realign",
    )


def make_embedding(classifier: str, pack: CriteriaPack, err: Console) -> Any:
    if classifier != "embedding":
        return None
    from realign.stages.embedding import ClassifierUnavailable, EmbeddingClassifier

    try:
        return EmbeddingClassifier.for_pack(pack, on_train=err.print)
    except ClassifierUnavailable as e:
        raise UsageError(f"{e}\ninstall the extra: pip install 'realign[classifier]'") from e


def build_runtime(
    settings: RunSettings,
    pack: CriteriaPack,
    options: RunOptions,
    err: Console,
    *,
    reads_input: bool = True,
) -> Runtime:
    """The run's stages and writer; `reads_input=False` for a Ray worker, which is handed its
    records and must not open the driver's input (its path may not even exist on its node)."""
    from realign.io.write import RecordWriter

    engine: Engine | None = None
    closers: list[Callable[[], Any]] = []
    if needs_llm(settings):
        # A Ray run's driver sends no request: its workers may hold the key (the cluster's).
        opts = replace(settings.engine, key_optional=settings.distributed)
        built = build_engine(opts, stderr=err.file)
        engine, closers = built.engine, built.closers
    retriever = make_retriever(settings, engine, err)
    backend = engine.backend if engine is not None else None
    stages = Stages(
        pack=pack,
        engine=engine,
        options=options,
        embedding=make_embedding(settings.classifier, pack, err),
        retriever=retriever,
        model=getattr(backend, "model", None),
        backend=getattr(backend, "name", None),
        command=settings.command,
    )
    window = max(4 * (engine.limit.maximum if engine is not None else 1), 16)

    def open_writer(path: Path) -> RecordWriter:
        # Flat records go back out through the same mapping they came in with.
        return RecordWriter(
            path,
            settings.output_format,
            fields=settings.fields,
            source_fields=settings.fields,
            keep_types_of=settings.input,
        )

    total = count_records(settings.input) if reads_input else None
    return Runtime(stages, window, total, open_writer, closers)
