"""Options shared by several commands, declared once as ``Annotated`` aliases.

The help text of an option is the docstring of its config field (:mod:`smokerdet.config`),
read by :func:`option`; a command's defaults are its config's. Range checks are the
config's ``__post_init__``, not Typer's, so one message names the ``--flag`` everywhere.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from smokerdet.config import EvalConfig, ScoringConfig, field_help


def option(config: type, field: str, *decls: str, **kwargs: Any) -> Any:
    """A ``typer.Option`` for ``config.field``, whose help is that field's docstring.

    Example:
        >>> from smokerdet.config import TrainConfig
        >>> Epochs = Annotated[int, option(TrainConfig, "epochs", "--epochs", "-e")]
    """
    flag = "--" + field.replace("_", "-")
    return typer.Option(*(decls or (flag,)), help=field_help(config)[field], **kwargs)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


ModelOpt = Annotated[
    str | None, option(ScoringConfig, "model", "--model", "-m", metavar="NAME|PATH")
]
DataOpt = Annotated[Path | None, option(EvalConfig, "data", "--data", "-d", metavar="DIR")]
DeviceOpt = Annotated[Device, option(ScoringConfig, "device")]
ThresholdOpt = Annotated[float | None, option(ScoringConfig, "threshold")]
ScoreBatchOpt = Annotated[int, option(ScoringConfig, "batch_size", "--batch-size", "-b")]
ScoreWorkersOpt = Annotated[int | None, option(ScoringConfig, "workers")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]

DEFAULT_DEVICE = Device(ScoringConfig.device)
