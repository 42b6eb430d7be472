"""``smokerdet predict``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from smokerdet.cli._options import (
    DEFAULT_DEVICE,
    DeviceOpt,
    ModelOpt,
    ScoreBatchOpt,
    ScoreWorkersOpt,
    ThresholdOpt,
    option,
)
from smokerdet.config import PredictConfig


class Only(str, Enum):
    smoking = "smoking"
    not_smoking = "not_smoking"


PathsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH", help="Image files, folders, glob patterns, or - to read paths from stdin."
    ),
]
JsonLinesOpt = Annotated[
    bool, typer.Option("--json", help="Write JSON Lines on stdout, one object per image.")
]
CsvOpt = Annotated[
    Path | None,
    typer.Option("--csv", metavar="FILE", help="Also write the rows to this CSV file."),
]
OnlyOpt = Annotated[
    Only | None,
    typer.Option(
        "--only",
        metavar="[smoking|not_smoking]",
        help="Show only images with this label (and those that failed, one row each).",
    ),
]
RecursiveOpt = Annotated[bool, option(PredictConfig, "recursive", "--recursive/--no-recursive")]


def predict(
    paths: PathsArg,
    model: ModelOpt = PredictConfig.model,
    threshold: ThresholdOpt = PredictConfig.threshold,
    batch_size: ScoreBatchOpt = PredictConfig.batch_size,
    workers: ScoreWorkersOpt = PredictConfig.workers,
    device: DeviceOpt = DEFAULT_DEVICE,
    json_out: JsonLinesOpt = False,
    csv_path: CsvOpt = None,
    only: OnlyOpt = None,
    recursive: RecursiveOpt = PredictConfig.recursive,
) -> None:
    """Label photos as smoking or not smoking.

    Prints a table (or JSON Lines with --json) with each image's label and p(smoking).
    A broken or missing file becomes a row with its error; the run goes on.

    \b
    Exit codes:
      0  every image got a label
      1  no usable input at all, or another error
      2  bad usage
      3  some images failed (their rows say why), the others were labelled

    Example:

    \b
        smokerdet predict photos/ --json | jq 'select(.label == "smoking") | .path'
    """
    import time

    from smokerdet.cli._output import print_warning, render_predictions
    from smokerdet.errors import ConfigError, NoInputError
    from smokerdet.predict import expand_inputs
    from smokerdet.predict import predict as run_predict

    if json_out and csv_path is not None and str(csv_path) == "-":
        raise ConfigError("--csv - and --json both want stdout: give --csv a file name")
    cfg = PredictConfig(
        model=model,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device.value,
        recursive=recursive,
    )
    inputs = expand_inputs(paths, recursive=cfg.recursive)
    if not inputs.items:
        for w in inputs.warnings:
            print_warning(w)
        raise NoInputError("no images to label in the given paths", hint="check the PATH arguments")
    started = time.perf_counter()
    rows = run_predict(
        inputs,
        model=cfg.model,
        threshold=cfg.threshold,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        device=cfg.device,
    )
    summary = render_predictions(
        rows,
        paths=[path for path, _ in inputs.items],
        json_lines=json_out,
        csv_path=csv_path,
        only=only.value if only else None,
        started=started,
    )
    if summary.labelled == 0:
        raise typer.Exit(1)
    if summary.failed:
        raise typer.Exit(3)
