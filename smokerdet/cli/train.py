"""``smokerdet train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smokerdet.cli._options import DEFAULT_DEVICE, DataOpt, DeviceOpt, JsonOpt, option
from smokerdet.training import TrainConfig as C

# Options only `train` has; help texts are TrainConfig's field docstrings.
ArchOpt = Annotated[str | None, option(C, "arch", "--arch", "-a", metavar="ARCH")]
EpochsOpt = Annotated[int, option(C, "epochs", "--epochs", "-e")]
BatchOpt = Annotated[int, option(C, "batch_size", "--batch-size", "-b")]
LrOpt = Annotated[float, option(C, "lr")]
WeightDecayOpt = Annotated[float, option(C, "weight_decay")]
WarmupOpt = Annotated[float, option(C, "warmup_epochs")]
ImgSizeOpt = Annotated[int | None, option(C, "img_size")]
PretrainedOpt = Annotated[bool, option(C, "pretrained", "--pretrained/--no-pretrained")]
WeightsOpt = Annotated[Path | None, option(C, "weights", metavar="FILE")]
InitOpt = Annotated[str | None, option(C, "init", metavar="default|NAME|PATH")]
SeedOpt = Annotated[int, option(C, "seed")]
NameOpt = Annotated[str | None, option(C, "name", metavar="NAME")]
OverwriteOpt = Annotated[bool, option(C, "overwrite")]
PatienceOpt = Annotated[int, option(C, "patience")]
WorkersOpt = Annotated[int | None, option(C, "workers")]
LpEpochsOpt = Annotated[int, option(C, "lp_epochs")]
SmoothingOpt = Annotated[float, option(C, "label_smoothing")]
TtaOpt = Annotated[bool, option(C, "tta")]
EmaOpt = Annotated[float, option(C, "ema")]
HalfOpt = Annotated[bool, option(C, "half")]
CvOpt = Annotated[int, option(C, "cv", metavar="K")]
RecipeOpt = Annotated[str, option(C, "recipe", metavar="auto|head|full")]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        metavar="NAME",
        help="Continue an interrupted run from its last finished epoch (other options come "
        "from that run).",
    ),
]
TrackOpt = Annotated[
    str | None,
    typer.Option(
        "--track",
        metavar="mlflow|tensorboard",
        help="Log the run to MLflow (MLFLOW_TRACKING_URI, else a local store in the data dir) "
        "or TensorBoard; needs pip install 'smokerdet[mlflow]' or 'smokerdet[tensorboard]'.",
    ),
]


def train(
    arch: ArchOpt = C.arch,
    data: DataOpt = None,
    epochs: EpochsOpt = C.epochs,
    batch_size: BatchOpt = C.batch_size,
    lr: LrOpt = C.lr,
    weight_decay: WeightDecayOpt = C.weight_decay,
    warmup_epochs: WarmupOpt = C.warmup_epochs,
    img_size: ImgSizeOpt = C.img_size,
    pretrained: PretrainedOpt = C.pretrained,
    weights: WeightsOpt = None,
    init: InitOpt = C.init,
    seed: SeedOpt = C.seed,
    name: NameOpt = C.name,
    overwrite: OverwriteOpt = C.overwrite,
    patience: PatienceOpt = C.patience,
    device: DeviceOpt = DEFAULT_DEVICE,
    workers: WorkersOpt = C.workers,
    lp_epochs: LpEpochsOpt = C.lp_epochs,
    label_smoothing: SmoothingOpt = C.label_smoothing,
    tta: TtaOpt = C.tta,
    ema: EmaOpt = C.ema,
    half: HalfOpt = C.half,
    cv: CvOpt = C.cv,
    recipe: RecipeOpt = C.recipe,
    resume: ResumeOpt = None,
    track: TrackOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on labelled photos and save it in the data dir.

    The best epoch by validation F1 is kept, and its decision threshold is chosen on the
    validation split. With --cv K, the epoch count and threshold come from K-fold
    cross-validation instead, and the model is trained on all the training and validation
    photos.

    To adapt a model to your site's photos, pass --init: up to 300 photos, only its head is
    refitted (with rehearsal of its original training photos; its accuracy cross-validated
    on yours); more photos fine-tune the whole model (--recipe overrides).

    \b
        smokerdet train --init default --data ./my-site-photos --name my-site

    On several processes or GPUs, launch it with torchrun (--batch-size is then per process):

    \b
        torchrun --nproc_per_node 4 -m smokerdet train --data ./smoker-detection

    Example:

    \b
        smokerdet train --arch resnet18 --no-pretrained --data ./smoker-detection --epochs 10
    """
    # Every parameter but these three is the TrainConfig field of the same name.
    options = {k: v for k, v in locals().items() if k not in ("resume", "track", "json_out")}
    from smokerdet import distributed
    from smokerdet.cli._output import RichTrainReporter, print_json, render_cv, render_train, say
    from smokerdet.errors import ConfigError
    from smokerdet.training import CVResult, TrainResult, resume_training
    from smokerdet.training import train as run_train
    from smokerdet.training.tracking import track_run

    result: TrainResult | CVResult
    if resume is not None and cv:
        raise ConfigError(
            "--cv and --resume can't be combined: --resume continues an interrupted run "
            "with that run's own options",
            hint="drop --cv to resume, or start a new --cv run without --resume",
        )
    main_rank = distributed.world_from_env().is_main
    cfg = None if resume is not None else C(**{**options, "device": device.value})
    with track_run(track if main_rank else None, RichTrainReporter(), cfg) as run:
        result = (
            resume_training(resume, run.reporter) if cfg is None else run_train(cfg, run.reporter)
        )
        run.finish(result)
    if not main_rank:
        return  # the main rank reports
    if json_out:
        print_json(result.to_dict())
    elif isinstance(result, CVResult):
        render_cv(result)
    elif result.recipe == "head":
        render_train(result, threshold_from="the balanced head's cut")
    else:
        render_train(result)
    final = result.final if isinstance(result, CVResult) else result
    say(
        f"use it with: smokerdet predict --model {final.name} PHOTOS... "
        f"or smokerdet models default {final.name}"
    )
