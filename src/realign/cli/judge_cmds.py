"""`realign judge` (pointwise scores or a pairwise comparison) and `realign report`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from realign.cli import common, options

if TYPE_CHECKING:
    from rich.console import Console

    from realign.judge.core import ReferenceIndex
    from realign.llm.engine import Engine
    from realign.records import Record

JUDGE_HELP = """Judge responses with an LLM.

**One input: pointwise scores.** Each response gets a 1-10 score and a short rationale per
aspect. **Two inputs A B: pairwise comparison.** Records are matched by id (or by instruction
text when ids differ; unmatched ones are listed); each pair is judged in both orders per
aspect, and a verdict that flips with the order counts as a tie. Outcomes are for B against A
(win = B better), overall and per task type, with bootstrap 95% intervals.

Aspects: `alignment` (does what the request asks, judged against the request alone, never
against realign's own criteria), `factuality` (uses the `--reference` answer matched by record
id when given; a list answer needs every line), `readability` (well-organised length is not a
fault). Reference metrics that need no LLM (gold-answer containment, math final answers,
tokens, format features) are shown beside the verdicts. A judge model whose output is
degenerate (all ties, one score for everything, rationales like "][") is named with a
warning, and the reasons are listed in the output's `judge_warnings`.

Examples:

    realign judge out.json -o scores.json --aspects alignment,readability
    realign judge original.json realigned.json -o cmp.json --html cmp.html
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
INPUTS = typer.Argument(..., help="One dataset (scores) or two, A then B (comparison).")
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
            None, help="Judge model (default gpt-4o; the embedded model with --backend local)."
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
        input_format: str | None = options.INPUT_FORMAT,
        fields: str | None = options.FIELDS,
    ) -> None:
        raise typer.Exit(_judge(**locals()))

    @app.command(help=REPORT_HELP, no_args_is_help=True)
    def report(
        input: Path = REPORT_INPUT,
        html: Path = REPORT_HTML,
        reference: Path | None = REFERENCE,
        max_rows: int = typer.Option(5000, min=1, help="Responses shown in the diff view."),
        input_format: str | None = options.INPUT_FORMAT,
        fields: str | None = options.FIELDS,
    ) -> None:
        raise typer.Exit(_report(**locals()))


# --- implementation (heavy imports stay in here) ------------------------------------------


def _console() -> Console:
    from realign.cli.console import make_console

    return make_console()


def read_dataset(
    path: Path, input_format: str | None, fields: str | None, limit: int | None = None
) -> tuple[list[Record], list[str]]:
    """All records of a dataset and the read errors (each naming file, record and field)."""
    from realign.io.datafiles import read_records
    from realign.io.formats import FormatError
    from realign.records import Record

    if not path.exists() and not str(path).startswith("hf:"):
        raise common.die(f"{path}: no such file")
    fmt = input_format or ("fields" if fields else None)
    records: list[Record] = []
    errors: list[str] = []
    try:
        for item in read_records(path, input_format=fmt, fields=fields):
            if isinstance(item, Record):
                records.append(item)
                if limit is not None and len(records) >= limit:
                    break
            elif item.index is None:  # the whole file: empty, UTF-16, not a JSON array
                raise common.die(str(item))
            else:
                errors.append(str(item))
    except FormatError as e:  # the whole file: unknown format, bad --fields, …
        raise common.die(str(e)) from e
    return records, errors


def _references(path: Path | None, input_format: str | None, con: Console) -> ReferenceIndex | None:
    from realign.judge.core import ReferenceIndex

    if path is None:
        return None
    recs, errors = read_dataset(path, input_format=None, fields=None)
    for e in errors:
        con.print(f"[yellow]reference not readable:[/] {e}")
    if not recs:
        raise common.die(f"{path}: no readable reference records")
    return ReferenceIndex(recs)


def _engine(
    model: str | None,
    base_url: str | None,
    backend: str | None,
    concurrency: int | None,
    no_cache: bool,
) -> Engine:
    from realign.llm.engine import Engine

    try:
        chosen = _backend(model, base_url, backend)
    except (ValueError, RuntimeError) as e:
        raise common.die(f"judge backend: {e}") from e
    cache = None
    if not no_cache:
        from realign.llm.cache import Cache

        cache = Cache()
    limit = concurrency or (1 if chosen.name == "local" else 16)
    return Engine(chosen, concurrency=limit, cache=cache)


def _backend(model: str | None, base_url: str | None, backend: str | None) -> Any:
    """The judge's backend, resolved like every model (flags > env > config file).

    The judge defaults to a GPT-4-class model rather than the pipeline's default, unless a
    model is configured somewhere or the embedded local model will answer.
    """
    import sys

    from realign.config import load_settings
    from realign.judge.core import DEFAULT_JUDGE_MODEL
    from realign.llm.registry import resolve_backend

    settings = load_settings({"model": model, "base_url": base_url, "backend": backend})
    goes_local = settings.backend == "local" or (
        not settings.backend and not settings.api_key and not settings.base_url
    )
    if settings.model is None and not goes_local:
        settings = settings.model_copy(update={"model": DEFAULT_JUDGE_MODEL})
    return resolve_backend(settings, stderr=sys.stderr)


def _judge(
    *,
    inputs: list[Path],
    output: Path,
    aspects: str,
    reference: Path | None,
    html: Path | None,
    model: str | None,
    base_url: str | None,
    backend: str | None,
    criteria: Path | None,
    pack: str,
    concurrency: int | None,
    no_cache: bool,
    limit: int | None,
    resamples: int,
    seed: int,
    input_format: str | None,
    fields: str | None,
) -> int:
    import asyncio

    from realign.cli.progress import make_progress
    from realign.criteria import CriteriaError, load_pack
    from realign.judge import core as judge
    from realign.llm.engine import BudgetExceeded
    from realign.llm.ratelimit import CircuitOpen

    con = _console()
    if len(inputs) not in (1, 2):
        raise common.die(f"give one input (scores) or two (A B comparison), not {len(inputs)}")
    if any(output.resolve() == p.resolve() for p in inputs):
        raise common.die("the output must not overwrite an input; choose another -o path")
    try:
        wanted = judge.parse_aspects(aspects)
    except ValueError as e:
        raise common.die(f"--aspects: {e}") from e
    crit_pack = None
    if "alignment" in wanted:
        try:
            crit_pack = load_pack(pack, criteria)
        except CriteriaError as e:
            raise common.die(f"criteria: {e}") from e
    datasets = [read_dataset(p, input_format, fields, limit) for p in inputs]
    read_errors = [
        f"{p}: {e}" if str(p) not in e else e
        for p, (_, errs) in zip(inputs, datasets, strict=True)
        for e in errs
    ]
    for e in read_errors:
        con.print(f"[red]not readable:[/] {e}")
    refs = _references(reference, input_format, con)
    engine = _engine(model, base_url, backend, concurrency, no_cache)

    progress = make_progress(con, None)  # the total is known once the pairs are matched
    task = progress.add_task("judge", total=None, note="")

    def on_total(n: int) -> None:
        progress.update(task, total=n)

    def on_progress(n: int) -> None:
        st = engine.stats
        progress.update(task, advance=n, note=f"{st.cache_hits} cached · {st.errors} errors")

    async def main() -> judge.Comparison | judge.ScoresReport:
        try:
            if len(inputs) == 2:
                return await judge.judge_pairwise(
                    engine,
                    datasets[0][0],
                    datasets[1][0],
                    wanted,
                    pack=crit_pack,
                    references=refs,
                    names=(str(inputs[0]), str(inputs[1])),
                    reference_name=str(reference) if reference else None,
                    on_total=on_total,
                    on_progress=on_progress,
                    resamples=resamples,
                    seed=seed,
                )
            return await judge.judge_pointwise(
                engine,
                datasets[0][0],
                wanted,
                pack=crit_pack,
                references=refs,
                input_name=str(inputs[0]),
                reference_name=str(reference) if reference else None,
                on_total=on_total,
                on_progress=on_progress,
                resamples=resamples,
                seed=seed,
            )
        finally:
            await engine.aclose()

    try:
        with progress:
            result = asyncio.run(main())
    except (CircuitOpen, BudgetExceeded, KeyboardInterrupt) as e:
        con.print(
            f"[red]stopped:[/] {e or 'interrupted'}\nNothing was written; rerun the same command "
            "to continue (answers already received come from the cache)."
        )
        return 3
    result.read_errors = read_errors
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    con.print(_summary(result))
    if result.judge_warnings:
        from realign.judge.core import unfit_message

        con.print(f"[bold red]warning:[/] {unfit_message(result.model, result.judge_warnings)}")
    con.print(f"wrote {output}")
    if html is not None:
        _write_html(result, html, con)
    failed = len(result.failures)
    if failed or read_errors:
        con.print(
            f"[red]{failed} judge call(s) failed and {len(read_errors)} record(s) could not be "
            f"read[/]: they are listed in {output} (`failures`, `read_errors`); rerun to retry "
            "(answers already received come from the cache)."
        )
        return 1
    return 0


def _summary(result: Any) -> Any:
    from rich.table import Table

    from realign.judge.core import Comparison

    if isinstance(result, Comparison):
        t = Table(title=f"B ({result.b}) against A ({result.a})")
        for h in ("aspect", "n", "B better [95% CI]", "tie", "A better [95% CI]", "consistent"):
            t.add_column(h)
        for a in result.aspects:
            s = result.summary[a].overall
            t.add_row(
                a,
                str(s.n),
                f"{s.win.rate:.0%} [{s.win.low:.0%}–{s.win.high:.0%}]",
                f"{s.tie.rate:.0%}",
                f"{s.lose.rate:.0%} [{s.lose.low:.0%}–{s.lose.high:.0%}]",
                f"{s.consistency:.0%}",
            )
        for name, m in (("A", result.metrics_a), ("B", result.metrics_b)):
            if m.containment_rate is not None:
                t.caption = (t.caption or "") + (
                    f"{name} contains a gold answer: {m.containment_rate:.1%} of {m.with_reference}   "
                )
        return t
    t = Table(title=f"scores of {result.input}")
    for h in ("aspect", "n", "mean [95% CI]"):
        t.add_column(h)
    for a in result.aspects:
        s = result.summary[a].overall
        t.add_row(a, str(s.n), f"{s.mean:.2f} [{s.low:.2f}–{s.high:.2f}]")
    if result.metrics.containment_rate is not None:
        t.caption = f"contains a gold answer: {result.metrics.containment_rate:.1%}"
    return t


def _write_html(result: Any, path: Path, con: Console) -> None:
    from realign.judge.core import Comparison
    from realign.report import core as report

    view = (
        report.comparison_view(result)
        if isinstance(result, Comparison)
        else report.scores_view(result)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.render_html(view), encoding="utf-8")
    con.print(f"wrote {path}")


def _judge_output(path: Path) -> Any | None:
    """A Comparison / ScoresReport when `path` is one written by `realign judge`, else None."""
    import json

    from pydantic import ValidationError

    from realign.judge.core import Comparison, ScoresReport

    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    if not head.startswith(b"{"):
        return None  # a dataset is a JSON list
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    model = {"comparison": Comparison, "scores": ScoresReport}.get(kind)  # type: ignore[arg-type]
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise common.die(
            f"{path}: looks like a judge output ({kind}) but does not validate: {e}"
        ) from e


def _report(
    *,
    input: Path,
    html: Path,
    reference: Path | None,
    max_rows: int,
    input_format: str | None,
    fields: str | None,
) -> int:
    from realign.report import core as report

    con = _console()
    judged = _judge_output(input)
    if judged is not None:
        from realign.judge.core import Comparison, comparison_warnings, scores_warnings

        if not judged.judge_warnings:  # an output written before realign checked its judge
            check = comparison_warnings if isinstance(judged, Comparison) else scores_warnings
            judged.judge_warnings = check(judged)
        if reference is not None:
            con.print("[yellow]--reference is ignored for a judge output (it has its own).[/]")
        _write_html(judged, html, con)
        return 0
    records, errors = read_dataset(input, input_format, fields)
    for e in errors:
        con.print(f"[red]not readable:[/] {e}")
    refs = _references(reference, input_format, con)
    if not any(r.meta.units for r in records):
        con.print(
            f"[yellow]{input}: no record has realign results (a `realign` key with units); "
            "showing the responses as they are.[/]"
        )
    view = report.run_view(
        records, source=str(input), references=refs, read_errors=errors, max_rows=max_rows
    )
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(report.render_html(view), encoding="utf-8")
    con.print(f"wrote {html}")
    return 1 if errors else 0
