"""``smokerdet predict``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from smokerdet.cli._options import (
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    BackendOpt,
    DeviceOpt,
    ModelOpt,
    ScoreBatchOpt,
    ScoreWorkersOpt,
    ThresholdOpt,
    option,
)
from smokerdet.scoring import PredictConfig

if TYPE_CHECKING:
    from smokerdet.scoring import Inputs


class Only(str, Enum):
    smoking = "smoking"
    not_smoking = "not_smoking"


PathsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH",
        help="Image or video files, folders, glob patterns, http(s):// snapshot URLs, or - to "
        "read paths from stdin.",
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
FpsOpt = Annotated[float, option(PredictConfig, "fps", metavar="N")]
EventsOpt = Annotated[bool, option(PredictConfig, "events")]
SnapshotsOpt = Annotated[Path | None, option(PredictConfig, "snapshots", metavar="DIR")]
HeatmapsOpt = Annotated[
    Path | None,
    typer.Option(
        "--heatmaps",
        metavar="DIR",
        help="Write a PNG per photo showing where the model looked into DIR (created; its "
        "parent must exist); each row gets its file name in a 'heatmap' column.",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="Score only shard I of N (counted from 0) of the inputs, for N independent jobs; "
        "join their --output files with --merge.",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the rows to FILE as JSON Lines after a header line naming the inputs, "
        "shard and model, batch by batch; resumable with --resume.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the --output FILE of a run that stopped: skip the paths already in it.",
    ),
]
MergeOpt = Annotated[
    bool,
    typer.Option(
        "--merge",
        help="The PATHs are the --output files of --shard runs: print their rows in input "
        "order, as one run would have.",
    ),
]


def predict(
    paths: PathsArg,
    model: ModelOpt = PredictConfig.model,
    threshold: ThresholdOpt = PredictConfig.threshold,
    batch_size: ScoreBatchOpt = PredictConfig.batch_size,
    workers: ScoreWorkersOpt = PredictConfig.workers,
    device: DeviceOpt = DEFAULT_DEVICE,
    backend: BackendOpt = DEFAULT_BACKEND,
    heatmaps: HeatmapsOpt = None,
    json_out: JsonLinesOpt = False,
    csv_path: CsvOpt = None,
    only: OnlyOpt = None,
    recursive: RecursiveOpt = PredictConfig.recursive,
    fps: FpsOpt = PredictConfig.fps,
    events: EventsOpt = PredictConfig.events,
    snapshots: SnapshotsOpt = PredictConfig.snapshots,
    shard: ShardOpt = None,
    output: OutputOpt = None,
    resume: ResumeOpt = False,
    merge: MergeOpt = False,
) -> None:
    """Label photos and videos as smoking or not smoking.

    Prints a table (or JSON Lines with --json) with each image's label and p(smoking).
    A video gives a row per sampled frame (--fps), or per smoking event with --events; an
    http(s):// URL is fetched as one photo (a camera's snapshot). A broken or missing file
    or URL becomes a row with its error; the run goes on.

    \b
    Exit codes:
      0  every image got a label
      1  no usable input at all, or another error
      2  bad usage
      3  some inputs failed (their rows say why), the others were labelled

    Many photos: split them with --shard and --merge, spread them over processes with
    torchrun, and keep a resumable --output file (see docs/scale.md).

    Example:

    \b
        smokerdet predict photos/ --json | jq 'select(.label == "smoking") | .path'
        smokerdet predict photos/ --heatmaps heat/ --csv results.csv
        smokerdet predict clip.mp4 --events --snapshots events/
    """
    import time

    from smokerdet.cli._output import render_predictions
    from smokerdet.distributed import world_from_env
    from smokerdet.errors import ConfigError
    from smokerdet.scoring import predict as run_predict

    if json_out and csv_path is not None and str(csv_path) == "-":
        raise ConfigError("--csv - and --json both want stdout: give --csv a file name")
    cfg = PredictConfig(
        model=model,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device.value,
        backend=backend.value,
        recursive=recursive,
        fps=fps,
        events=events,
        snapshots=snapshots,
    )
    if merge or shard or output or resume or world_from_env().distributed:
        if heatmaps is not None:
            raise ConfigError("--heatmaps works in a plain run: drop --shard/--output/--merge")
        scaled = dict(shard=shard, output=output, resume=resume, merge=merge)
        return _scaled(paths, cfg, json_out, csv_path, only, **scaled)
    inputs = _expand(paths, cfg.recursive)
    started = time.perf_counter()
    rows = run_predict(
        inputs,
        model=cfg.model,
        threshold=cfg.threshold,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        device=cfg.device,
        backend=cfg.backend,
        heatmaps=heatmaps,
        fps=cfg.fps,
        events=cfg.events,
        snapshots=cfg.snapshots,
    )
    summary = render_predictions(
        rows,
        paths=[path for path, _ in inputs.items],
        json_lines=json_out,
        csv_path=csv_path,
        only=only.value if only else None,
        started=started,
        heatmaps=heatmaps is not None,
        events=cfg.events,
    )
    if summary.labelled == 0:
        raise typer.Exit(1)
    if summary.failed:
        raise typer.Exit(3)


def _scaled(
    paths: list[str],
    cfg: PredictConfig,
    json_out: bool,
    csv_path: Path | None,
    only: Only | None,
    *,
    shard: str | None,
    output: Path | None,
    resume: bool,
    merge: bool,
) -> None:
    """``predict`` with --merge, --shard, --output/--resume, or under torchrun."""
    import time

    from smokerdet import distributed
    from smokerdet.cli._output import err, render_predictions
    from smokerdet.errors import ConfigError
    from smokerdet.scoring import merge_results, parse_shard, predict_shard

    started = time.perf_counter()
    if merge:
        if shard or output or resume:
            raise ConfigError("--merge joins finished parts: drop --shard, --output and --resume")
        total, rows = merge_results(paths)
        summary = render_predictions(
            rows,
            total=total,
            json_lines=json_out,
            csv_path=csv_path,
            only=only.value if only else None,
            started=started,
        )
        raise typer.Exit(_exit_code(summary.labelled, summary.failed))
    if output is not None and (csv_path is not None or only is not None):
        raise ConfigError("--output writes every row as JSON Lines: drop --csv and --only")
    part = parse_shard(shard) if shard is not None else None
    with distributed.session("cpu") as world:  # gloo: the rows travel between CPUs
        main = world.is_main
        inputs = distributed.on_main(lambda: _expand(paths, cfg.recursive))
        run = predict_shard(
            inputs,
            shard=part,
            output=output,
            resume=resume,
            model=cfg.model,
            threshold=cfg.threshold,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            device=cfg.device,
            backend=cfg.backend,
        )
        labelled, failed = run.done - run.failed_before, run.failed_before
        if not main:
            for _ in run.rows:  # this rank's share of the work
                pass
        elif output is None:
            summary = render_predictions(
                run.rows,
                total=run.total,
                json_lines=json_out,
                csv_path=csv_path,
                only=only.value if only else None,
                started=started,
            )
            labelled, failed = labelled + summary.labelled, failed + summary.failed
        else:
            for row in run.rows:
                labelled += row.error is None
                failed += row.error is not None
            err().print(
                f"{run.total} images ({run.done} already done), {failed} failed; "
                f"results in {output}"
            )
        # The main rank alone exits with the run's code: torchrun stops the other ranks as
        # soon as one of them exits non-zero, and the main one may still be writing.
        code = _exit_code(labelled, failed) if world.is_main else 0
    if code:
        raise typer.Exit(code)


def _expand(paths: list[str], recursive: bool) -> Inputs:
    from smokerdet.cli._output import print_warning
    from smokerdet.errors import NoInputError
    from smokerdet.scoring import expand_inputs

    inputs = expand_inputs(paths, recursive=recursive)
    if not inputs.items:
        for w in inputs.warnings:
            print_warning(w)
        raise NoInputError("no images to label in the given paths", hint="check the PATH arguments")
    return inputs


def _exit_code(labelled: int, failed: int) -> int:
    """0 all labelled (an empty shard too), 1 none, 3 some failed (the rows say why)."""
    return (1 if labelled == 0 else 3) if failed else 0
