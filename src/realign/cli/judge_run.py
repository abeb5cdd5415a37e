"""What `realign judge` and `realign report` do, kept out of the option declarations
(`judge_cmds.py`). The judge runs as a resumable job like every dataset command: each answer
is kept in the run state beside the output as it arrives (`AnswerJournal`), so a stopped run
resumes without asking again for what it already received."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from realign.cli.common import die, lock_output
from realign.cli.console import make_console
from realign.cli.job import Tick, open_job, run_job
from realign.judge import ReferenceIndex
from realign.pipeline.inputs import check_output, read_dataset


def _references(path: Path | None, con: Console) -> ReferenceIndex | None:
    if path is None:
        return None
    recs, errors = read_dataset(path, input_format=None, fields=None)
    for e in errors:
        con.print(f"[yellow]reference not readable:[/] {e}")
    if not recs:
        raise die(f"{path}: no readable reference records")
    return ReferenceIndex(recs)


def _stamp(path: Path | None) -> Any:
    """What identifies an input's version for the fingerprint (size and time of a file)."""
    if path is None or not path.exists():
        return None if path is None else str(path)
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def judge_command(
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
    baseline: Path | None,
    max_cost: float | None,
    dry_run: bool,
    input_format: str | None,
    fields: str | None,
) -> int:
    from realign import judge
    from realign.criteria import CriteriaError, load_pack
    from realign.llm.build import EngineOptions, build_engine
    from realign.pipeline.runner import fingerprint
    from realign.pipeline.state import AnswerJournal

    con = make_console()
    if not inputs:
        raise die("give one input (scores), two (A B comparison) or more (ratings)")
    base = _baseline_index(inputs, baseline)
    check_output(output, *inputs)
    try:
        wanted = judge.parse_aspects(aspects)
    except ValueError as e:
        raise die(f"--aspects: {e}") from e
    crit_pack = None
    if "alignment" in wanted:
        try:
            crit_pack = load_pack(pack, criteria)
        except CriteriaError as e:
            raise die(f"criteria: {e}") from e
    datasets = [read_dataset(p, input_format, fields, limit) for p in inputs]
    read_errors = [
        f"{p}: {err}" if str(p) not in err else err
        for p, (_, errs) in zip(inputs, datasets, strict=True)
        for err in errs
    ]
    for err in read_errors:
        con.print(f"[red]not readable:[/] {err}")
    refs = _references(reference, con)
    engine_options = EngineOptions(
        backend=backend,
        model=model,
        base_url=base_url,
        concurrency=concurrency,
        max_cost=max_cost,
        no_cache=no_cache,
        default_model=judge.DEFAULT_JUDGE_MODEL,
    )
    if dry_run:
        return _dry_run(
            engine_options, [d for d, _ in datasets], wanted, crit_pack, refs, base, con
        ) or (1 if read_errors else 0)

    lock = lock_output(output)  # before anything is paid for
    built = build_engine(engine_options, stderr=con.file)
    engine = built.engine
    settings = {
        "inputs": [_stamp(p) for p in inputs],
        "reference": _stamp(reference),
        "aspects": wanted,
        "pack": crit_pack.content_hash if crit_pack else None,
        "limit": limit,
        "input_format": input_format,
        "fields": fields,
        "model": engine.backend.model,
        "backend": engine.backend.backend_id,
        "baseline": base,
    }
    job = open_job(
        "judge",
        output,
        fingerprint("judge", inputs[0], settings),
        con,
        lock=lock,
        engine=engine,
        closers=built.closers,
        what="judge answers",
    )
    engine.cache = AnswerJournal(job.state, engine.cache)
    result: list[judge.Comparison | judge.ScoresReport | judge.MultiComparison] = []

    async def work(tick: Tick) -> None:
        def on_progress(n: int) -> None:
            for _ in range(n):
                tick()

        planned = [0]

        def on_total(n: int) -> None:  # several comparisons each announce their calls
            planned[0] += n
            tick.set_total(planned[0])

        common: dict[str, Any] = {
            "pack": crit_pack,
            "references": refs,
            "reference_name": str(reference) if reference else None,
            "on_total": on_total,
            "on_progress": on_progress,
            "resamples": resamples,
            "seed": seed,
        }
        if len(inputs) > 2:
            named = [(str(p), d[0]) for p, d in zip(inputs, datasets, strict=True)]
            result.append(await judge.judge_many(engine, named, wanted, baseline=base, **common))
        elif len(inputs) == 2:
            names = (str(inputs[0]), str(inputs[1]))
            a, b = datasets[0][0], datasets[1][0]
            result.append(await judge.judge_pairwise(engine, a, b, wanted, names=names, **common))
        else:
            result.append(
                await judge.judge_pointwise(
                    engine, datasets[0][0], wanted, input_name=str(inputs[0]), **common
                )
            )

    def note() -> str:
        st = engine.stats
        return f"{st.cache_hits} cached · {st.errors} errors"

    code = run_job(job, work, total=None, note=note, done_before=0)
    if code is not None:
        return code
    (out,) = result
    out.read_errors = read_errors
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(out.model_dump_json(indent=2), encoding="utf-8")
    job.state.close(remove=True)
    return _report_judged(out, output, html, read_errors, con)


def _report_judged(
    result: Any, output: Path, html: Path | None, read_errors: list[str], con: Console
) -> int:
    from realign.judge import unfit_message

    con.print(_summary(result))
    if result.judge_warnings:
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


def _baseline_index(inputs: list[Path], baseline: Path | None) -> int | None:
    if baseline is None:
        return None
    if len(inputs) < 3:
        raise die("--baseline needs three or more inputs (two are compared with each other)")
    for i, p in enumerate(inputs):
        if p == baseline or p.resolve() == baseline.resolve():
            return i
    raise die(f"--baseline {baseline}: not one of the inputs ({', '.join(map(str, inputs))})")


def _dry_run(
    opts: Any,
    datasets: list[Any],
    aspects: list[str],
    pack: Any,
    refs: ReferenceIndex | None,
    base: int | None,
    con: Console,
) -> int:
    """Print what the judge run would send and cost; sends nothing. 0 (the caller adds the
    exit status that unreadable records would give the real run)."""
    from realign.judge.estimate import estimate_judge
    from realign.llm.build import pricing_model
    from realign.llm.pricing import estimate, render_table

    stage = estimate_judge(datasets, aspects, pack=pack, references=refs, baseline=base)
    con.print(
        f"dry run: {sum(len(d) for d in datasets)} records read from {len(datasets)} "
        "input(s); no request was sent."
    )
    con.print(render_table(estimate(pricing_model(opts), [stage])))
    con.print(
        f"output tokens are counted at the cap of {stage.output_tokens // max(1, stage.requests)} a call (an upper bound)."
    )
    return 0


def _rate(r: Any) -> str:
    return f"{r.rate:.0%} [{r.low:.0%}–{r.high:.0%}]"


def _summary(result: Any) -> Any:
    from rich.table import Table

    from realign.judge import Comparison, MultiComparison

    if isinstance(result, MultiComparison):
        t = Table(title="Bradley-Terry ratings (Elo scale, 95% CI)", caption=result.note)
        t.add_column("dataset")
        for a in result.aspects:
            t.add_column(a)
        for name in result.datasets:
            cells = []
            for a in result.aspects:
                r = next(x for x in result.ratings[a] if x.name == name)
                cells.append(f"{r.rating:.0f} [{r.low:.0f}–{r.high:.0f}]")
            t.add_row(name, *cells)
        return t
    if isinstance(result, Comparison):
        t = Table(
            title=f"B ({result.b}) against A ({result.a})",
            caption="At equal length: the length-controlled win rate (README, Judging).   ",
        )
        for h in (
            "aspect",
            "n",
            "B better [95% CI]",
            "B better at equal length",
            "tie",
            "A better [95% CI]",
            "consistent",
        ):
            t.add_column(h)
        for a in result.aspects:
            s = result.summary[a].overall
            lc = result.summary[a].length_controlled
            t.add_row(
                a,
                str(s.n),
                _rate(s.win),
                _rate(lc) if lc else "n/a",
                f"{s.tie.rate:.0%}",
                _rate(s.lose),
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
    from realign import report
    from realign.judge import Comparison, MultiComparison

    if isinstance(result, MultiComparison):
        view = report.multi_view(result)
    elif isinstance(result, Comparison):
        view = report.comparison_view(result)
    else:
        view = report.scores_view(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.render_html(view), encoding="utf-8")
    con.print(f"wrote {path}")


def _judge_output(path: Path) -> Any | None:
    """A Comparison / ScoresReport when `path` is one written by `realign judge`, else None."""
    import json

    from pydantic import ValidationError

    from realign.judge import Comparison, MultiComparison, ScoresReport

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
    models: dict[Any, type[Comparison] | type[ScoresReport] | type[MultiComparison]] = {
        "comparison": Comparison,
        "scores": ScoresReport,
        "multi_comparison": MultiComparison,
    }
    model = models.get(kind)
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise die(f"{path}: looks like a judge output ({kind}) but does not validate: {e}") from e


def report_command(
    *,
    input: Path,
    html: Path,
    reference: Path | None,
    max_rows: int,
    input_format: str | None,
    fields: str | None,
) -> int:
    from realign import report

    con = make_console()
    judged = _judge_output(input)
    if judged is not None:
        from realign.judge import (
            Comparison,
            MultiComparison,
            comparison_warnings,
            scores_warnings,
        )

        if not judged.judge_warnings and not isinstance(judged, MultiComparison):
            # an output written before realign checked its judge
            check = comparison_warnings if isinstance(judged, Comparison) else scores_warnings
            judged.judge_warnings = check(judged)
        if reference is not None:
            con.print("[yellow]--reference is ignored for a judge output (it has its own).[/]")
        _write_html(judged, html, con)
        return 0
    records, errors = read_dataset(input, input_format, fields)
    for e in errors:
        con.print(f"[red]not readable:[/] {e}")
    refs = _references(reference, con)
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
