"""``smokerdet export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smokerdet.cli._options import option
from smokerdet.models import ExportConfig

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
    Path | None, option(ExportConfig, "out", "--out", "-o", metavar="FILE", show_default=False)
]
RefitOpt = Annotated[
    Path | None, option(ExportConfig, "refit_familiarity", metavar="DIR", show_default=False)
]


def export(
    model: ExportModelArg = None,
    out: OutOpt = None,
    refit_familiarity: RefitOpt = None,
) -> None:
    """Export a trained model to one ONNX file that predicts without torch.

    The file carries what the model needs to answer: its metadata (arch, input size,
    threshold, class names, TTA and the hash of its weights), its familiarity stats and its
    rehearsal rows. It is checked against torch before it is written; its path is printed on
    stdout. In the model's folder it makes predict, eval and serve use ONNX Runtime; written
    elsewhere, it is a model on its own (--model FILE.onnx).

    A model without familiarity stats (made before they existed, or killed before they were
    fitted) gets them with --refit-familiarity DIR, the dataset it was trained on.

    Example:

    \b
        smokerdet export mymodel
        smokerdet export mymodel --out mymodel.onnx
        smokerdet predict --model mymodel.onnx photos/
        smokerdet export mymodel --refit-familiarity photos/
    """
    from smokerdet.cli._output import render_export
    from smokerdet.errors import ConfigError
    from smokerdet.inference import export_model
    from smokerdet.models import resolve_model

    if model is not None and model.startswith("hf://") and out is None:
        raise ConfigError(
            f"{model} lives in the Hub cache, which export does not write into",
            hint=f"write a copy with --out FILE: smokerdet export {model} --out model.onnx",
        )
    # Resolved here so that an unknown MODEL's hint says how export takes a path.
    _, folder = resolve_model(model, how="give MODEL as a model folder: smokerdet export PATH")
    render_export(export_model(ExportConfig(str(folder), out, refit_familiarity)))
