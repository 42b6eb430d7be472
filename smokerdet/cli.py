"""The ``smokerdet`` command: options in, one library call, results out.

Shared options are declared once as ``Annotated`` aliases. Each command checks its options,
calls one function of the library and renders what it returns. ``main()`` turns a
:class:`~smokerdet.errors.SmokerdetError` into ``Error:``/``Hint:`` lines and an exit code;
a traceback appears only with ``SMOKERDET_DEBUG=1``.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from smokerdet.__about__ import __version__
from smokerdet.errors import SmokerdetError
from smokerdet.evaluate import EvalConfig
from smokerdet.inference import DEFAULT_BATCH_SIZE
from smokerdet.train import TrainConfig

DEBUG_ENV = "SMOKERDET_DEBUG"

app = typer.Typer(
    name="smokerdet",
    help="Tell whether people in photos are smoking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Only(str, Enum):
    smoking = "smoking"
    not_smoking = "not_smoking"


# Options shared by several commands: one help text, one default.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME|PATH",
        help="Model name, folder, 'latest' or 'default'. Default: the latest trained model, "
        "else the model shipped with smokerdet.",
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data", "-d", metavar="DIR", help="Dataset folder. Default: the downloaded dataset."
    ),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Images per batch.", min=1)]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Augmentation worker processes. Default: two fewer than the cores, at most 4.",
        min=0,
    ),
]
ScoreWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Worker processes. On a CPU each decodes and scores its own batches (one per "
        "core, at most 4, by default; 0: all in this process); on a GPU they decode.",
        min=0,
    ),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        "--threshold", help="Probability from which a photo is 'smoking'. Default: the model's."
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed (data split, init, augmentation).")
]

F = TypeVar("F", bound=Callable[..., Any])

# Each command's defaults live in its library dataclass; the CLI reads them from there.
TRAIN = TrainConfig()
EVAL = EvalConfig()
DEFAULT_SPLIT = Split(EVAL.split)


#: What a Ctrl-C in each command leaves behind, and how to go on.
INTERRUPT_HINTS = {
    "download": "run the same command again: the download resumes where it stopped",
    "predict": "rows already printed are complete; run again for the rest",
}


def command(name: str) -> Callable[[F], F]:
    """Register a command whose SmokerdetErrors become ``Error:``/``Hint:`` and an exit code."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from smokerdet.errors import Interrupted
            from smokerdet.render import print_error, setup_logging

            setup_logging()
            try:
                try:
                    return fn(*args, **kwargs)
                except KeyboardInterrupt:
                    raise Interrupted(
                        f"{name} interrupted", hint=INTERRUPT_HINTS.get(name)
                    ) from None
            except SmokerdetError as e:
                if os.environ.get(DEBUG_ENV) == "1":
                    raise
                print_error(e)
                raise typer.Exit(e.exit_code) from None

        app.command(name)(wrapper)
        return fn

    return decorate


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smokerdet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Tell whether people in photos are smoking.

    Start with `smokerdet predict photos/` (uses the model shipped with smokerdet), or
    train your own with `smokerdet train --data DIR`.
    """


@command("info")
def info(json_out: JsonOpt = False) -> None:
    """Show versions, the device, the data dir and the models found there.

    Example:

    \b
        smokerdet info --json
    """
    from smokerdet.info import gather_info
    from smokerdet.render import print_json, render_info

    result = gather_info()
    print_json(result) if json_out else render_info(result)


@command("train")
def train(
    arch: Annotated[
        str, typer.Option("--arch", "-a", metavar="ARCH", help="Any timm model name.")
    ] = TRAIN.arch,
    data: DataOpt = None,
    epochs: Annotated[
        int, typer.Option("--epochs", "-e", help="Maximum fine-tuning epochs.")
    ] = TRAIN.epochs,
    batch_size: BatchOpt = TRAIN.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW).")] = TRAIN.lr,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay.")
    ] = TRAIN.weight_decay,
    warmup_epochs: Annotated[
        float, typer.Option("--warmup-epochs", help="Linear warmup length, in epochs.")
    ] = TRAIN.warmup_epochs,
    img_size: Annotated[
        int | None, typer.Option("--img-size", help="Input size. Default: the model's own.")
    ] = None,
    pretrained: Annotated[
        bool,
        typer.Option(
            "--pretrained/--no-pretrained",
            help="Start from timm's ImageNet weights (fails if they can't be had; never "
            "silently random).",
        ),
    ] = TRAIN.pretrained,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", metavar="FILE", help="Local backbone state dict (.safetensors or .pth)."
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            metavar="default|NAME|PATH",
            help="Fine-tune an existing smokerdet model: 'default', a name or a path. "
            "Keeps its architecture and preprocessing.",
        ),
    ] = None,
    seed: SeedOpt = TRAIN.seed,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="Model name. Default: ARCH-TIMESTAMP."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing model of that --name.")
    ] = False,
    patience: Annotated[
        int, typer.Option("--patience", help="Early-stopping patience in epochs (0: off).")
    ] = TRAIN.patience,
    device: DeviceOpt = Device.auto,
    workers: WorkersOpt = None,
    lp_epochs: Annotated[
        int, typer.Option("--lp-epochs", help="Linear-probe epochs before fine-tuning (LP-FT).")
    ] = TRAIN.lp_epochs,
    label_smoothing: Annotated[
        float, typer.Option("--label-smoothing", help="BCE label smoothing.")
    ] = TRAIN.label_smoothing,
    tta: Annotated[
        bool, typer.Option("--tta", help="Store horizontal-flip test-time augmentation.")
    ] = False,
    ema: Annotated[
        float,
        typer.Option("--ema", help="EMA decay per step for the saved weights (0: off, e.g. 0.99)."),
    ] = TRAIN.ema,
    half: Annotated[
        bool, typer.Option("--half", help="Store the weights in fp16, half the size.")
    ] = TRAIN.half,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="NAME",
            help="Continue an interrupted run from its last finished epoch (other options "
            "come from that run).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a model on labelled photos and save it in the data dir.

    The best epoch by validation F1 is kept, and its decision threshold is chosen on the
    validation split.

    Example:

    \b
        smokerdet train --arch resnet18 --no-pretrained --data ./smoker-detection --epochs 10
    """
    from smokerdet.render import RichTrainReporter, print_json, render_train
    from smokerdet.train import TrainConfig, resume_training
    from smokerdet.train import train as run_train

    if resume is not None:
        result = resume_training(resume, RichTrainReporter())
        print_json(result.to_dict()) if json_out else render_train(result)
        return

    pretrained_flag = pretrained and weights is None and init is None
    cfg = TrainConfig(
        arch=arch,
        data=data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        img_size=img_size,
        pretrained=pretrained_flag,
        weights=weights,
        init=init,
        seed=seed,
        name=name,
        overwrite=overwrite,
        patience=patience,
        device=device.value,
        workers=workers,
        lp_epochs=lp_epochs,
        label_smoothing=label_smoothing,
        tta=tta,
        ema=ema,
        half=half,
    )
    result = run_train(cfg, RichTrainReporter())
    print_json(result.to_dict()) if json_out else render_train(result)


@command("eval")
def eval_(
    model: ModelOpt = None,
    data: DataOpt = None,
    split: Annotated[
        Split, typer.Option("--split", "-s", help="Which split to score.")
    ] = DEFAULT_SPLIT,
    threshold: ThresholdOpt = None,
    batch_size: BatchOpt = EVAL.batch_size,
    workers: ScoreWorkersOpt = None,
    device: DeviceOpt = Device.auto,
    seed: SeedOpt = EVAL.seed,
    json_out: JsonOpt = False,
) -> None:
    """Score a model on a dataset split: accuracy, precision, recall, F1 and more.

    Smoking is the positive class. No augmentation; the checkpoint's own preprocessing.

    Example:

    \b
        smokerdet eval --data ./smoker-detection --split val --json
    """
    from smokerdet.evaluate import EvalConfig, evaluate
    from smokerdet.render import print_json, render_eval

    report = evaluate(
        EvalConfig(
            model=model,
            data=data,
            split=split.value,
            threshold=threshold,
            batch_size=batch_size,
            workers=workers,
            device=device.value,
            seed=seed,
        )
    )
    print_json(report.to_dict()) if json_out else render_eval(report)


@command("predict")
def predict(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH",
            help="Image files, folders, glob patterns, or - to read paths from stdin.",
        ),
    ],
    model: ModelOpt = None,
    threshold: ThresholdOpt = None,
    batch_size: BatchOpt = DEFAULT_BATCH_SIZE,
    workers: ScoreWorkersOpt = None,
    device: DeviceOpt = Device.auto,
    json_out: Annotated[
        bool, typer.Option("--json", help="Write JSON Lines on stdout, one object per image.")
    ] = False,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", metavar="FILE", help="Also write the rows to this CSV file."),
    ] = None,
    only: Annotated[
        Only | None, typer.Option("--only", help="Show only images with this label.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Walk folders recursively.")
    ] = True,
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
    from smokerdet.errors import ConfigError, NoInputError
    from smokerdet.predict import expand_inputs
    from smokerdet.predict import predict as run_predict
    from smokerdet.render import render_predictions

    if json_out and csv_path is not None and str(csv_path) == "-":
        raise ConfigError("--csv - and --json both want stdout: give --csv a file name")
    inputs = expand_inputs(paths, recursive=recursive)
    if not inputs.items:
        for w in inputs.warnings:
            sys.stderr.write(f"Warning: {w}\n")
        raise NoInputError("no images to label in the given paths", hint="check the PATH arguments")
    started = time.perf_counter()
    rows = run_predict(
        inputs,
        model=model,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device.value,
    )
    summary = render_predictions(
        rows,
        total=len(inputs),
        json_lines=json_out,
        csv_path=csv_path,
        only=only.value if only else None,
        started=started,
    )
    if summary.labelled == 0:
        raise typer.Exit(1)
    if summary.failed:
        raise typer.Exit(3)


@command("download")
def download(
    what: Annotated[
        str | None,
        typer.Argument(metavar="[dataset|weights]", help="What to fetch. Default: both."),
    ] = None,
    archs: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ARCH]...", help="Architectures, for weights. Default: resnet50."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", metavar="NAME|URL", help="Dataset source id, or an archive URL."),
    ] = None,
    from_path: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="PATH",
            help="Import a local .zip/.tar/.tar.gz/folder (or weights file).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even if present.")] = False,
    allow_partial: Annotated[
        bool,
        typer.Option("--allow-partial", help="Accept a dataset copy that lacks whole splits."),
    ] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="Show sources, architectures and what is present.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Download (or import) the dataset and pretrained weights into the data dir.

    Everything is verified before it is used: the dataset's structure and each file's
    SHA-256, the weights by loading them into their architecture. Interrupted downloads
    resume. Run twice, it says "already present" and touches no network.

    Example:

    \b
        smokerdet download
        smokerdet download dataset --from smoker-detection.zip
        smokerdet download weights resnet50 --from resnet50_a1_in1k.safetensors
    """
    from smokerdet.download import download_plan
    from smokerdet.errors import ConfigError
    from smokerdet.render import DownloadProgress, print_json, render_download, render_download_list

    if list_:
        from smokerdet.download import list_status

        status = list_status()
        print_json(status) if json_out else render_download_list(status)
        return
    if what not in (None, "dataset", "weights"):
        raise ConfigError(f"download takes 'dataset' or 'weights ARCH...', not {what!r}")
    if what == "dataset" and archs:
        raise ConfigError("architectures go with `download weights`, not `download dataset`")
    if what is None and from_path is not None:
        raise ConfigError(
            "--from needs to know what it is: `download dataset --from` or `download weights ARCH --from`"
        )
    if what == "weights" and from_path is not None and len(archs or []) != 1:
        raise ConfigError("--from imports weights for exactly one ARCH")
    with DownloadProgress() as progress:
        result = download_plan(
            what,
            archs or [],
            source=source,
            from_path=from_path,
            force=force,
            allow_partial=allow_partial,
            progress=progress.update,
        )
    print_json(result) if json_out else render_download(result)


def main() -> None:
    """Console-script entry point: run the app and turn errors into one-line messages."""
    from smokerdet.render import print_error

    debug = os.environ.get(DEBUG_ENV) == "1"
    try:
        app(prog_name="smokerdet")
    except SmokerdetError as e:
        if debug:
            raise
        print_error(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except Exception as e:  # last resort: no traceback for users unless they ask
        if debug:
            raise
        print_error(
            f"unexpected {type(e).__name__}: {e}",
            hint=f"rerun with {DEBUG_ENV}=1 for a traceback, and please report it",
        )
        sys.exit(1)


# --- serve (self-contained: port as a whole into the cli package) ----------------------------
from smokerdet.serve import ServeConfig  # noqa: E402  (kept inside this block on purpose)

SERVE = ServeConfig()


@command("serve")
def serve_cmd(
    model: ModelOpt = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on. Not loopback: use --token.")
    ] = SERVE.host,
    port: Annotated[
        int, typer.Option("--port", "-p", help="TCP port (0: any free port).")
    ] = SERVE.port,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="SMOKERDET_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on every API call.",
        ),
    ] = None,
    collect: Annotated[
        Path | None,
        typer.Option(
            "--collect",
            metavar="DIR",
            help="Save reviewed photos into DIR/smoking/ and DIR/not_smoking/ (for train).",
        ),
    ] = None,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest request body, in MiB.")
    ] = SERVE.max_body_mb,
    max_files: Annotated[int, typer.Option("--max-files", help="Most images per request.")] = (
        SERVE.max_files
    ),
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="Largest image, in pixels (width x height).")
    ] = SERVE.max_pixels,
    threads: Annotated[
        int, typer.Option("--threads", help="Inferences run at once, each in a worker thread.")
    ] = SERVE.threads,
    device: DeviceOpt = Device.auto,
) -> None:
    """Serve the model over HTTP: an API for cameras and a review page at /.

    Binds to 127.0.0.1 by default. The API is documented at /docs. SIGTERM or Ctrl-C
    finishes the requests in flight and exits 0.

    Example:

    \b
        smokerdet serve --port 8000
        curl -s -H 'Content-Type: image/jpeg' --data-binary @photo.jpg \\
            http://127.0.0.1:8000/v1/predict
    """
    from smokerdet.serve import serve

    serve(
        ServeConfig(
            model=model,
            host=host,
            port=port,
            token=token,
            collect=collect,
            max_body_mb=max_body_mb,
            max_files=max_files,
            max_pixels=max_pixels,
            threads=threads,
            device=device.value,
        )
    )


if __name__ == "__main__":
    main()
