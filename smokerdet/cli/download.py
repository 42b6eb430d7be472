"""``smokerdet download``, ``download dataset`` and ``download weights``.

Each sub-command calls one function of :mod:`smokerdet.download`; the bare ``download`` runs
both with their defaults, and ``download --list`` shows what is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from smokerdet.cli._options import Command, JsonOpt

SourceOpt = Annotated[
    str | None,
    typer.Option("--source", metavar="NAME|URL", help="Dataset source id, or an archive URL."),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Fetch again even if present; with --from, replace a different cached copy after "
        "verification.",
    ),
]
PartialOpt = Annotated[
    bool, typer.Option("--allow-partial", help="Accept a dataset copy that lacks whole splits.")
]
ListOpt = Annotated[
    bool, typer.Option("--list", help="Show sources, architectures and what is present.")
]
_DATASET_ONLY = ("--source", "--allow-partial")
# Only there to say where --from goes: the bare `download` can't know what a file is.
BareFromOpt = Annotated[Path | None, typer.Option("--from", hidden=True)]


class _DownloadGroup(TyperGroup):
    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:  # type: ignore[override]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            ctx.fail(f"download takes 'dataset' or 'weights ARCH...', not {args[0]!r}")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_DownloadGroup,
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _run(
    what: str | None,
    archs: list[str],
    *,
    source: str | None = None,
    from_path: Path | None = None,
    force: bool = False,
    allow_partial: bool = False,
    json_out: bool = False,
) -> None:
    """Try every part, show the report, and exit with its code (a byte progress bar on stderr)."""
    from smokerdet.cli._output import (
        DownloadProgress,
        print_download_problems,
        print_json,
        render_download_report,
        say,
    )
    from smokerdet.download import download_all

    with DownloadProgress() as progress:
        report = download_all(
            what,
            archs,
            source=source,
            from_path=from_path,
            force=force,
            allow_partial=allow_partial,
            progress=progress.update,
            on_part=lambda line: say(f"{line}..."),
        )
    print_json(report.to_dict()) if json_out else render_download_report(report)
    print_download_problems(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.callback()
def download(
    ctx: typer.Context,
    list_: ListOpt = False,
    source: SourceOpt = None,
    force: ForceOpt = False,
    allow_partial: PartialOpt = False,
    from_path: BareFromOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Download (or import) the dataset and pretrained weights into the data dir.

    Everything is verified before it is used: the dataset's structure and each file's
    SHA-256, the weights by loading them into their architecture. Interrupted downloads
    resume. Run twice, it says "already present" and touches no network. With no
    sub-command: the dataset and the resnet50 weights.

    Example:

    \b
        smokerdet download
        smokerdet download dataset --from smoker-detection.zip
        smokerdet download weights resnet50 --from resnet50_a1_in1k.safetensors
    """
    from smokerdet.errors import ConfigError

    if ctx.invoked_subcommand is not None:
        # These options belong to the bare `download`; a sub-command has its own.
        given = {"--list": list_, "--source": source, "--force": force,
                 "--allow-partial": allow_partial, "--from": from_path, "--json": json_out}  # fmt: skip
        misplaced = [flag for flag, value in given.items() if value]
        if misplaced and ctx.invoked_subcommand == "weights" and misplaced[0] in _DATASET_ONLY:
            raise ConfigError(
                f"{misplaced[0]} is for the dataset: `smokerdet download dataset "
                f"{misplaced[0]} ...`"
            )
        if misplaced:
            raise ConfigError(
                f"{misplaced[0]} goes after the sub-command: "
                f"`smokerdet download {ctx.invoked_subcommand} {misplaced[0]} ...`"
            )
        return
    if list_:
        from smokerdet.cli._output import print_json, render_download_list
        from smokerdet.download import list_status

        status = list_status()
        print_json(status) if json_out else render_download_list(status)
        return
    if from_path is not None:
        raise ConfigError(
            "--from needs to know what it is: `download dataset --from` or "
            "`download weights ARCH --from`"
        )
    _run(None, [], source=source, force=force, allow_partial=allow_partial, json_out=json_out)


@app.command("dataset", cls=Command)
def dataset(
    source: SourceOpt = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from", metavar="PATH", help="Import a local .zip/.tar/.tar.gz file or a folder."
        ),
    ] = None,
    force: ForceOpt = False,
    allow_partial: PartialOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Download (or import) the Smoker Detection dataset, verified.

    The sources are tried in order (see `smokerdet download --list`); the first that works
    is kept.

    Example:

    \b
        smokerdet download dataset
        smokerdet download dataset --from smoker-detection.zip
    """
    _run(
        "dataset",
        [],
        source=source,
        from_path=from_path,
        force=force,
        allow_partial=allow_partial,
        json_out=json_out,
    )


@app.command("weights", cls=Command)
def weights(
    archs: Annotated[
        list[str] | None,
        typer.Argument(metavar="ARCH", help="Architectures. Default: resnet50."),
    ] = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from", metavar="FILE", help="Import a local .safetensors or .pth file (one ARCH)."
        ),
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    source: Annotated[str | None, typer.Option("--source", hidden=True)] = None,
) -> None:
    """Download (or import) ImageNet weights, checked to load into their architecture.

    Example:

    \b
        smokerdet download weights resnet50 convnext_tiny
        smokerdet download weights resnet50 --from resnet50_a1_in1k.safetensors
    """
    from smokerdet.errors import ConfigError

    if source is not None:
        raise ConfigError(
            "--source is for the dataset; weights come from the Hugging Face Hub or --from FILE",
            hint="set HF_ENDPOINT for a Hub mirror, or import a file: "
            "smokerdet download weights ARCH --from FILE",
        )
    if from_path is not None and len(archs or []) != 1:
        raise ConfigError("--from imports weights for exactly one ARCH")
    _run("weights", archs or [], from_path=from_path, force=force, json_out=json_out)
