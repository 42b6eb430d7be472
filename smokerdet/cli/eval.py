"""``smokerdet eval``."""

from __future__ import annotations

from typing import Annotated

from smokerdet.cli._options import (
    DEFAULT_DEVICE,
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
from smokerdet.config import EvalConfig

SplitOpt = Annotated[Split, option(EvalConfig, "split", "--split", "-s")]
SeedOpt = Annotated[int, option(EvalConfig, "seed")]
DEFAULT_SPLIT = Split(EvalConfig.split)


def eval_(
    model: ModelOpt = EvalConfig.model,
    data: DataOpt = None,
    split: SplitOpt = DEFAULT_SPLIT,
    threshold: ThresholdOpt = EvalConfig.threshold,
    batch_size: ScoreBatchOpt = EvalConfig.batch_size,
    workers: ScoreWorkersOpt = EvalConfig.workers,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = EvalConfig.seed,
    json_out: JsonOpt = False,
) -> None:
    """Score a model on a dataset split: accuracy, precision, recall, F1 and more.

    Smoking is the positive class. No augmentation; the checkpoint's own preprocessing.
    Under torchrun, the processes share the images and the first one prints the report.

    Example:

    \b
        smokerdet eval --data ./smoker-detection --split val --json
    """
    from smokerdet import distributed
    from smokerdet.cli._output import print_json, render_eval
    from smokerdet.evaluate import evaluate

    cfg = EvalConfig(
        model=model,
        data=data,
        split=split.value,
        threshold=threshold,
        batch_size=batch_size,
        workers=workers,
        device=device.value,
        seed=seed,
    )
    main_rank = distributed.quiet_unless_main()
    with distributed.session("cpu"):  # under torchrun, ranks share the split (gloo)
        report = evaluate(cfg)
    if main_rank:
        print_json(report.to_dict()) if json_out else render_eval(report)
