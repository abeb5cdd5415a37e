"""`realign retrieve`: add search evidence to a dataset, without rewriting anything."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from realign.cli import common, options
from realign.llm.build import SEARCH_CONCURRENCY
from realign.search.registry import SPEC_HELP, default_retrieval_spec

if TYPE_CHECKING:
    from rich.console import Console

    from realign.criteria import CriteriaPack
    from realign.pipeline.state import RunState
    from realign.records import Failure, Record
    from realign.stages.retrieve import Retriever

__all__ = ["default_retrieval_spec", "register"]

WINDOW = 64  # records in flight at once; output stays in input order, memory stays flat
SHOWN_ERRORS = 20

HELP = f"""Add search evidence to each record, for the task types whose criterion says
`retrieval: yes` (in the built-in pack: open_qa, how_to_generation, fact_verification,
recommendations, explain_answer). Nothing is rewritten: the query, the cleaned snippets with their sources and a
note explaining any missing evidence go into each record's `realign` key, where `realign run`
and `realign stats` find them.

**Providers** (`--retrieval`): {SPEC_HELP}.
`google` uses GOOGLE_API_KEY and GOOGLE_CSE_ID, `serper` uses SERPER_API_KEY, `local:PATH`
searches your own documents offline (a JSONL file of `{{"id", "text", "title"?, "url"?}}` or a
folder of .txt/.md files; its BM25 index is saved beside it and rebuilt when it changes).
Every answer is cached in the realign store, so a rerun never pays twice, and progress is saved
record by record: after a crash or a kill, rerun the same command to resume.

**Task types** come from a previous `realign classify`/`run`, or from the input's ReAlign
`category`. Records with neither get no evidence unless `--all-types` is given.

Example (offline):

    realign retrieve examples/realign_items.json -o ev.json \\
        --retrieval local:examples/corpus/docs.jsonl

Example (Google through a proxy or a test server answering `URL/customsearch/v1`):

    realign retrieve data.json -o ev.json --retrieval google \\
        --search-endpoint http://127.0.0.1:8080/
"""


@dataclass
class Summary:
    records: int = 0
    failed: int = 0
    units: int = 0
    with_evidence: int = 0
    no_task_type_records: int = 0
    by_type: Counter[str] = field(default_factory=Counter)  # units with evidence per task type
    notes: Counter[str] = field(default_factory=Counter)  # why units got no evidence

    def add(self, record: Record) -> None:
        self.records += 1
        if any(u.task_type is None for u in record.meta.units):
            self.no_task_type_records += 1
        for u in record.meta.units:
            self.units += 1
            if u.evidence:
                self.with_evidence += 1
                self.by_type[u.task_type or "(no type)"] += 1
            elif u.evidence_note:
                # group "no usable evidence (5 results: …)" variants under one line
                self.notes[u.evidence_note.split(" (")[0]] += 1


def _say(text: str, *, fg: str | None = None) -> None:
    # Unwrapped, as data: file names and provider messages are not rich markup.
    _console().print(text, style=fg, soft_wrap=True, markup=False, highlight=False)


@functools.cache
def _console() -> Console:
    from realign.cli.console import make_console

    return make_console()


async def _process(
    args: dict[str, Any],
    pack: CriteriaPack,
    retriever: Retriever,
    state: RunState,
    classifier: Any | None,
    on_done: Callable[[Any], None],
) -> None:
    """Attach evidence to every record not yet in `state`, committing each one as it is done,
    so a killed run resumes where it stopped (answers already fetched come from the cache).
    Untyped units are typed by the offline classifier a batch at a time first (records done in
    an earlier run are not typed again)."""
    from realign.pipeline.inputs import read_items
    from realign.pipeline.record import pretyped
    from realign.pipeline.runner import process_items
    from realign.stages.retrieve import attach_evidence

    async def work(record: Record) -> Record:
        return await attach_evidence(
            record,
            pack,
            retriever,
            args["k"],
            args["max_evidence_tokens"],
            all_types=args["all_types"],
        )

    await process_items(
        pretyped(read_items(args["reader"]), pack, classifier, state.is_done),
        state,
        work,
        stage="retrieve",
        window=WINDOW,
        record_of=lambda rec: rec.raw,
        limit=args["limit"],
        on_done=on_done,
    )


def retrieve_command(
    input: Path = options.INPUT,
    output: Path = options.OUTPUT,
    retrieval: str | None = options.RETRIEVAL,
    search_endpoint: str | None = options.SEARCH_ENDPOINT,
    k: int = typer.Option(
        5, "--k", min=1, max=10, help="Results asked per query (Google: 10 at most)."
    ),
    max_evidence_tokens: int = typer.Option(
        600, min=50, help="Cap on the cleaned evidence per unit (cl100k tokens)."
    ),
    all_types: bool = typer.Option(
        False, help="Retrieve for every unit, whatever its task type (or lack of one)."
    ),
    classifier: str | None = typer.Option(
        None,
        help="Type units that have no task type before retrieving: embedding (offline, "
        "needs the `classifier` extra) | none. Default: embedding when installed, else none.",
    ),
    pack: str = options.PACK,
    criteria: Path | None = options.CRITERIA,
    google_api_key: str | None = typer.Option(
        None,
        help="Google API key (default: $GOOGLE_API_KEY; prefer the variable: flags show in `ps`).",
    ),
    google_cse_id: str | None = typer.Option(
        None, help="Programmable Search Engine id, `cx` (default: $GOOGLE_CSE_ID)."
    ),
    input_format: str | None = options.INPUT_FORMAT,
    limit: int | None = options.LIMIT,
    concurrency: int | None = typer.Option(
        None, min=1, help=f"Searches in flight at most (default: {SEARCH_CONCURRENCY})."
    ),
    no_cache: bool = options.NO_CACHE,
) -> None:
    with common.usage_errors():
        _retrieve(**locals())


def _retrieve(
    *,
    input: Path,
    output: Path,
    retrieval: str | None,
    search_endpoint: str | None,
    k: int,
    max_evidence_tokens: int,
    all_types: bool,
    classifier: str | None,
    pack: str,
    criteria: Path | None,
    google_api_key: str | None,
    google_cse_id: str | None,
    input_format: str | None,
    limit: int | None,
    concurrency: int | None,
    no_cache: bool,
) -> None:
    from realign.cli.job import open_job, run_job
    from realign.criteria import CriteriaError, load_pack
    from realign.io.write import RecordWriter
    from realign.llm.build import EngineOptions, build_engine
    from realign.pipeline.build import count_json_records, count_records
    from realign.pipeline.inputs import open_input
    from realign.pipeline.outputs import check_outputs, corpus_of, job_output
    from realign.pipeline.record import write_outputs
    from realign.pipeline.runner import fingerprint
    from realign.search.base import SearchError
    from realign.search.registry import make_provider
    from realign.stages.retrieve import Retriever

    reader = open_input(input, input_format, None)  # an unusable input stops here, exit 2
    inputs = [input, corpus_of(retrieval)]
    check_outputs([job_output(output)], inputs, store=True, cache=not no_cache)
    try:
        criteria_pack = load_pack(pack, criteria)
    except CriteriaError as e:
        raise common.die(f"criteria: {e}") from None
    if retrieval is None:
        retrieval, message = default_retrieval_spec(os.environ)
        _say(message)
    try:
        provider = make_provider(
            retrieval,
            search_endpoint,
            google_api_key=google_api_key,
            google_cse_id=google_cse_id,
        )
    except SearchError as e:
        raise common.die(f"--retrieval {retrieval}: {e}") from None
    lock = common.lock_output(output)
    typer_of_units = _offline_classifier(classifier, criteria_pack)
    # Search calls only: an engine without an LLM backend (its cache, its concurrency).
    built = build_engine(EngineOptions(concurrency=concurrency, no_cache=no_cache), llm=False)
    engine = built.engine
    retriever = Retriever(
        provider,
        engine,
        k=k,
        max_tokens=max_evidence_tokens,
        on_message=lambda m: _say(m, fg="yellow"),
    )
    args = {
        "input": input,
        "reader": reader,
        "output": output,
        "input_format": input_format,
        "k": k,
        "max_evidence_tokens": max_evidence_tokens,
        "all_types": all_types,
        "limit": limit,
    }
    fp = fingerprint(
        "retrieve",
        input,
        {
            "retrieval": retrieval,
            "endpoint": search_endpoint,
            "pack": criteria_pack.content_hash,
            "classifier": None if typer_of_units is None else typer_of_units.state.model_id,
            **{key: args[key] for key in ("input_format", "k", "max_evidence_tokens", "all_types")},
            "limit": limit,
        },
    )
    job = open_job("retrieve", output, fp, _console(), lock=lock, engine=engine)
    job.closers = built.closers
    state = job.state

    async def run(done: Callable[[Any], None]) -> None:
        await _process(args, criteria_pack, retriever, state, typer_of_units, done)

    def note() -> str:
        st = retriever.stats
        return f"searches {st.searches} · {engine.stats.cache_hits} cached · errors {st.errors}"

    code = run_job(
        job,
        run,
        total=count_records(input),
        note=note,
        late_total=lambda: count_json_records(input),
    )
    if code is not None:
        raise typer.Exit(code)

    summary = Summary()
    shown: list[str] = []  # the first errors, printed below the progress

    def show(failure: Failure) -> None:
        if len(shown) < SHOWN_ERRORS:
            shown.append(failure.error)

    written, summary.failed, failures_file = write_outputs(
        state, output, RecordWriter, on_written=summary.add, on_failed=show
    )
    summary.records = written  # a Parquet batch rejected on close is among the failures
    state.close(remove=True)
    for error in shown:
        _say(f"error: {error}", fg="red")
    if summary.failed:
        _say(f"{summary.failed} record(s) failed: see {failures_file}", fg="red")

    st = retriever.stats
    _say(
        f"records {summary.records} · units {summary.units} · with evidence {summary.with_evidence}"
        + (
            f" ({', '.join(f'{t} {n}' for t, n in summary.by_type.most_common())})"
            if summary.by_type
            else ""
        )
    )
    _say(
        f"searches {st.searches} ({engine.stats.cache_hits} from cache) · provider errors {st.errors}"
        + (f" · skipped after disable {st.skipped_disabled}" if st.skipped_disabled else "")
    )
    for msg, n in st.error_messages.most_common(3):
        _say(f"  {n}× {msg}")
    for why, n in summary.notes.most_common():
        _say(f"  no evidence for {n} unit(s): {why}")
    if summary.no_task_type_records and not all_types:
        _say(
            f"{summary.no_task_type_records} records have no task type: run `realign classify` "
            "first, pass --classifier embedding, or pass --all-types"
        )
    _say(f"wrote {output}")
    if summary.failed:
        raise typer.Exit(1)


def _offline_classifier(choice: str | None, pack: CriteriaPack) -> Any | None:
    """The embedding classifier when asked for (or by default when installed), else None."""
    from realign.stages import embedding as ec

    if choice not in (None, "embedding", "none"):
        raise common.die(f"--classifier {choice!r}: use embedding or none")
    if choice == "none" or (choice is None and not ec.available()):
        return None
    try:
        return ec.EmbeddingClassifier.for_pack(pack, on_train=lambda m: _say(m))
    except ec.ClassifierUnavailable as e:
        raise common.die(f"{e}\ninstall the extra: pip install 'realign[classifier]'") from None


def register(app: typer.Typer) -> None:
    app.command("retrieve", help=HELP, no_args_is_help=True)(retrieve_command)
