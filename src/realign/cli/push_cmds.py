"""`realign push`: publish a `realign run` output to the Hugging Face Hub with a dataset card."""

from __future__ import annotations

from pathlib import Path

import typer

from realign.cli import common

PUSH_HELP = """Upload a `realign run` output to a Hugging Face dataset repository.

The records go up as Parquet (`data/SPLIT-00000-of-0000N.parquet`, sharded when large) with
a `README.md` dataset card: the YAML header (license, task category, size, the data files of
each split), what realign did (criteria pack and hash, model, filter preset, records
rewritten/kept/skipped/failed per task type, from the records and the failures file), the
judge's results with `--judge`, and the command that made the output. All files go in one
commit: a failed push uploads nothing.

The token comes from `HF_TOKEN` or the login saved by `hf auth login`; `HF_ENDPOINT` points
at another Hub.

Examples:

    realign push out.jsonl --repo my-org/my-data --license apache-2.0
    realign push out.jsonl --repo my-org/my-data --overwrite \\
        --judge cmp.json
    realign push out.jsonl --repo my-org/my-data --card-only
"""


OUTPUT = typer.Argument(
    ..., help="A `realign run` output (.json, .jsonl, .parquet).", show_default=False
)
REPO = typer.Option(..., help="The dataset repository, ORG/NAME.", show_default=False)
JUDGE = typer.Option(None, help="A `realign judge` output whose results go in the card.")


def register(app: typer.Typer) -> None:
    @app.command(help=PUSH_HELP, no_args_is_help=True)
    def push(
        output: Path = OUTPUT,
        repo: str = REPO,
        private: bool = typer.Option(False, help="Make the repository private."),
        split: str = typer.Option("train", help="The split these records are."),
        card_only: bool = typer.Option(
            False, help="Only rewrite README.md (the repository must hold the split)."
        ),
        license: str | None = typer.Option(
            None,
            help="License id for the card (apache-2.0, cc-by-4.0, …). Default: the records' "
            "own `license` field, else `unknown`.",
        ),
        overwrite: bool = typer.Option(
            False, help="Push to an existing repository (replaces this split's files and the card)."
        ),
        judge: Path | None = JUDGE,
        max_shard_mb: float = typer.Option(256.0, help="Largest Parquet shard, in MB."),
    ) -> None:
        from realign.cli.console import make_console
        from realign.hub.push import PushRequest
        from realign.hub.push import push as push_output

        err = make_console()
        request = PushRequest(
            output=output, repo=repo, private=private, split=split, card_only=card_only,
            license=license, overwrite=overwrite, judge=judge, max_shard_mb=max_shard_mb,
        )  # fmt: skip
        with common.usage_errors():
            result = push_output(request, say=lambda m: err.print(m, markup=False))
        what = "created" if result.created else "updated"
        err.print(f"{what} {result.url}", markup=False, highlight=False)
        for path in result.uploaded:
            err.print(f"  uploaded {path}", markup=False, highlight=False)
        for path in result.deleted:
            err.print(f"  deleted  {path} (an old shard of this split)", markup=False)
        if result.license == "unknown":
            err.print("warning: license `unknown`; set one with --license", style="yellow")
