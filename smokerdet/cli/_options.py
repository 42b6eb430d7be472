"""Options shared by several commands, declared once as ``Annotated`` aliases.

The help text of an option is the docstring of its config field (:mod:`smokerdet.config`),
read by :func:`option`; a command's defaults are its config's. Range checks are the
config's ``__post_init__``, not Typer's, so one message names the ``--flag`` everywhere.
"""

from __future__ import annotations

from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand

from smokerdet.config import DEVICES, field_help
from smokerdet.scoring import EvalConfig, ScoringConfig

#: Metavars for numbers, instead of Typer's Python type names (``<int>``, ``<float>``).
NUMBER_METAVARS = {"int": "INTEGER", "float": "FLOAT"}


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:  # type: ignore[override]
        return None  # the metavar says it; Typer would add "<list[str]>", a Python type


class Command(TyperCommand):
    """A command whose help names arguments by their metavar only (``PATH...``, ``ARCH...``).

    Every command is registered with ``cls=Command``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _Argument


def option(config: type, field: str, *decls: str, **kwargs: Any) -> Any:
    """A ``typer.Option`` for ``config.field``, whose help is that field's docstring.

    Example:
        >>> from smokerdet.training.config import TrainConfig
        >>> Epochs = Annotated[int, option(TrainConfig, "epochs", "--epochs", "-e")]
    """
    flag = "--" + field.replace("_", "-")
    if "metavar" not in kwargs:
        kind = str({f.name: f.type for f in fields(config)}[field]).split(" | ")[0]
        if kind in NUMBER_METAVARS:
            kwargs["metavar"] = NUMBER_METAVARS[kind]
    return typer.Option(*(decls or (flag,)), help=field_help(config)[field], **kwargs)


#: ``--device``'s choices: :data:`smokerdet.config.DEVICES`.
Device = Enum("Device", {d: d for d in DEVICES}, type=str)  # type: ignore[misc]


class Backend(str, Enum):
    auto = "auto"
    onnx = "onnx"
    torch = "torch"


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


ModelOpt = Annotated[
    str | None, option(ScoringConfig, "model", "--model", "-m", metavar="NAME|PATH")
]
DataOpt = Annotated[Path | None, option(EvalConfig, "data", "--data", "-d", metavar="DIR")]
DeviceOpt = Annotated[Device, option(ScoringConfig, "device", metavar=f"[{'|'.join(DEVICES)}]")]
BackendOpt = Annotated[Backend, option(ScoringConfig, "backend", metavar="[auto|onnx|torch]")]
ThresholdOpt = Annotated[float | None, option(ScoringConfig, "threshold")]
ScoreBatchOpt = Annotated[int, option(ScoringConfig, "batch_size", "--batch-size", "-b")]
ScoreWorkersOpt = Annotated[int | None, option(ScoringConfig, "workers")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables.")]

DEFAULT_DEVICE = Device(ScoringConfig.device)
DEFAULT_BACKEND = Backend(ScoringConfig.backend)
