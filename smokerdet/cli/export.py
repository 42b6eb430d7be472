"""``smokerdet export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ExportModelArg = Annotated[
    str | None,
    typer.Argument(
        metavar="MODEL",
        help="Model name, folder, 'latest', 'default' or hf://ORG/NAME (default: the active "
        "model).",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        metavar="FILE",
        help="ONNX file to write (default: model.onnx in the model's folder).",
        show_default=False,
    ),
]


def export(model: ExportModelArg = None, out: OutOpt = None) -> None:
    """Export a trained model to an ONNX file that predicts without torch.

    The file carries the model's metadata (arch, input size, threshold, class names, TTA and
    the hash of its weights) and is checked against torch before it is written; its path is
    printed on stdout. In the model's folder it makes predict, eval and serve use ONNX
    Runtime; written elsewhere, it is a model on its own (--model FILE.onnx).

    Example:

    \b
        smokerdet export mymodel
        smokerdet export mymodel --out mymodel.onnx
        smokerdet predict --model mymodel.onnx photos/
    """
    from smokerdet.errors import ConfigError
    from smokerdet.models import export_onnx, resolve_model

    if model is not None and model.startswith("hf://") and out is None:
        raise ConfigError(
            f"{model} lives in the Hub cache, which export does not write into",
            hint=f"write a copy with --out FILE: smokerdet export {model} --out model.onnx",
        )
    # Resolved here so that an unknown MODEL's hint says how export takes a path.
    _, folder = resolve_model(model, how="give MODEL as a model folder: smokerdet export PATH")
    result = export_onnx(folder, out=out)
    typer.echo(str(result.path))
    note = "" if result.heatmaps else "; heatmaps need --backend torch"
    typer.echo(
        f"Exported {result.arch} ({result.size_bytes / 1e6:.1f} MB), "
        f"max |dp| vs torch = {result.max_abs_diff:.1e}{note}",
        err=True,
    )
