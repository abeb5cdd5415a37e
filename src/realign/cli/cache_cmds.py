"""`realign cache info|clear` and `realign batch status|collect`."""

from __future__ import annotations

from pathlib import Path

import typer

cache_app = typer.Typer(
    help=(
        "The per-request answer cache (SQLite): every paid answer is kept, keyed by a hash of "
        "the model, parameters, messages and output schema, so a rerun never pays twice.\n\n"
        "Location: `--cache PATH`, else `$REALIGN_CACHE`, else `$REALIGN_HOME/cache.sqlite` "
        "(`~/.realign/cache.sqlite`)."
    ),
    no_args_is_help=True,
)
batch_app = typer.Typer(
    help=(
        "OpenAI Batch API jobs started by `realign run --batch` (half price, answers within "
        "24 h). State lives in `$REALIGN_HOME/batches/`, so these work after the run exits."
    ),
    no_args_is_help=True,
)

_CACHE_OPT = typer.Option(
    None, "--cache", help="Cache file (default: $REALIGN_CACHE or $REALIGN_HOME/cache.sqlite)."
)


def _cache_path(path: Path | None) -> Path:
    from realign.llm.cache import default_cache_path

    return path.expanduser() if path is not None else default_cache_path()


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@cache_app.command("info")
def info(
    cache: Path | None = _CACHE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Where the cache is, how many answers it holds (per stage), its size and age.

    Example: `realign cache info`
    """
    from realign.llm.cache import CacheError, cache_info

    path = _cache_path(cache)
    try:
        ci = cache_info(path)
    except CacheError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    if as_json:
        typer.echo(ci.model_dump_json(indent=2))
        return
    typer.echo(f"cache:   {ci.path}")
    if not ci.exists:
        typer.echo("         (does not exist yet: it is created by the first run)")
        return
    typer.echo(f"entries: {ci.entries:,}")
    typer.echo(f"size:    {_size(ci.size_bytes)}")
    for stage, n in ci.by_stage.items():
        typer.echo(f"  {stage:<12} {n:>10,}")
    if ci.oldest is not None and ci.newest is not None:
        typer.echo(f"oldest:  {ci.oldest:%Y-%m-%d %H:%M:%S} UTC")
        typer.echo(f"newest:  {ci.newest:%Y-%m-%d %H:%M:%S} UTC")


@cache_app.command("clear")
def clear(
    cache: Path | None = _CACHE_OPT,
    stage: str | None = typer.Option(
        None, "--stage", help="Only this stage's answers (classify, rewrite, judge, search, …)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete cached answers (all, or one stage's). The next run pays for them again.

    Example: `realign cache clear --stage judge --yes`
    """
    from realign.llm.cache import Cache, CacheError

    path = _cache_path(cache)
    if not path.exists():
        typer.echo(f"{path}: no cache here, nothing to clear")
        return
    what = f"the {stage!r} answers" if stage else "every cached answer"
    if not yes and not typer.confirm(f"Delete {what} in {path}?"):
        raise typer.Exit(1)
    try:
        with Cache(path) as c:
            n = c.clear(stage)
    except CacheError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"{path}: deleted {n:,} entr{'y' if n == 1 else 'ies'}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
    _register_batch(app)


def _register_batch(app: typer.Typer) -> None:
    @batch_app.command("status")
    def status(
        batch_id: str | None = typer.Argument(None, help="A batch job id (default: all known)."),
    ) -> None:
        """Show the state of Batch API jobs: counts done / failed / pending, and files.

        Example: `realign batch status`
        """
        from realign.llm.batch import BatchError, list_jobs, refresh

        try:
            jobs = [refresh(j) for j in list_jobs(batch_id)]
        except BatchError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        if not jobs:
            typer.echo("no batch jobs recorded in $REALIGN_HOME/batches/")
            return
        for job in jobs:
            typer.echo(job.describe())

    @batch_app.command("collect")
    def collect(
        batch_id: str = typer.Argument(
            ..., help="The batch job id printed by `realign run --batch`."
        ),
        resubmit: bool = typer.Option(
            True, "--resubmit/--no-resubmit", help="Resubmit failed or expired requests."
        ),
    ) -> None:
        """Download a finished batch's answers into the cache; resubmit only what failed.

        Rerun `realign run … --batch` afterwards: every collected answer is read from the
        cache, so nothing is paid twice.

        Example: `realign batch collect batch_abc123`
        """
        from realign.llm.batch import BatchError, collect_job, load_job

        try:
            report = collect_job(load_job(batch_id), resubmit=resubmit)
        except BatchError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        typer.echo(report)
        if report.failed and not resubmit:
            raise typer.Exit(1)

    app.add_typer(batch_app, name="batch")
