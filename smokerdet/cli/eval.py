"""``smokerdet eval``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from smokerdet.cli._options import (
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    BackendOpt,
    DataOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    ScoreBatchOpt,
    ScoreWorkersOpt,
    Split,
    ThresholdOpt,
    option,
)
from smokerdet.scoring import EvalConfig

if TYPE_CHECKING:
    from smokerdet.scoring import EvalReport

SplitOpt = Annotated[
    Split, option(EvalConfig, "split", "--split", "-s", metavar="[test|val|train|all]")
]
SeedOpt = Annotated[int, option(EvalConfig, "seed")]
PlotsOpt = Annotated[
    Path | None,
    typer.Option(
        "--plots",
        metavar="DIR",
        help="Also draw a confusion matrix, ROC and precision-recall curves and a score "
        "histogram as PNG files in DIR (created; its parent must exist).",
    ),
]
DEFAULT_SPLIT = Split(EvalConfig.split)


def _check_writable(plots: Path) -> None:
    """Fail before scoring when the --plots folder could not be written.

    Tried with a real temporary file, since permission bits alone do not tell (root, ACLs,
    read-only mounts).
    """
    from smokerdet.errors import ConfigError

    if plots.exists() and not plots.is_dir():
        raise ConfigError(f"--plots {plots} is a file, not a folder")
    folder = plots if plots.is_dir() else plots.parent
    if not folder.is_dir():
        raise ConfigError(
            f"--plots {plots}: the folder {folder} does not exist",
            hint="create it first, or give --plots a folder inside an existing one",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(
            f"--plots {plots}: cannot write in {folder} ({e.strerror or e})",
            hint="give --plots a folder you can write to",
        ) from None


def _plot(report: EvalReport, plots: Path) -> None:
    from smokerdet.cli._output import say
    from smokerdet.errors import SmokerdetError
    from smokerdet.plots import plot_eval

    labels = [y for _, y, _ in report.probabilities]
    probabilities = [p for _, _, p in report.probabilities]
    title = f"{report.model} on {report.split} of {report.data}"
    try:
        written = plot_eval(labels, probabilities, report.threshold, plots, title)
    except OSError as e:
        raise SmokerdetError(
            f"the report is above, but the plots could not be written to {plots}: "
            f"{e.strerror or e}",
            hint="check the folder's permissions and free space, then run eval again",
        ) from None
    for path in written:
        say(f"Wrote {path}")


def eval_(
    model: ModelOpt = EvalConfig.model,
    data: DataOpt = None,
    split: SplitOpt = DEFAULT_SPLIT,
    threshold: ThresholdOpt = EvalConfig.threshold,
    batch_size: ScoreBatchOpt = EvalConfig.batch_size,
    workers: ScoreWorkersOpt = EvalConfig.workers,
    device: DeviceOpt = DEFAULT_DEVICE,
    backend: BackendOpt = DEFAULT_BACKEND,
    seed: SeedOpt = EvalConfig.seed,
    plots: PlotsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score a model on a dataset split: accuracy, precision, recall, F1 and more.

    Smoking is the positive class. No augmentation; the checkpoint's own preprocessing.
    Under torchrun, the processes share the images and the first one prints the report.

    Example:

    \b
        smokerdet eval --data ./smoker-detection --split val --json
        smokerdet eval --model my-model --data ./photos --plots plots/
    """
    from smokerdet import distributed
    from smokerdet.cli._output import print_json, render_eval
    from smokerdet.scoring import evaluate

    if plots is not None:
        _check_writable(plots)
    cfg = EvalConfig(
        model=model,
        data=data,
        split=split.value,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device.value,
        backend=backend.value,
        seed=seed,
    )
    with distributed.session("cpu") as world:  # under torchrun, ranks share the split (gloo)
        report = evaluate(cfg)
    if world.is_main:
        print_json(report.to_dict()) if json_out else render_eval(report)
        if plots is not None:
            _plot(report, plots)
