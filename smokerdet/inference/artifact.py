"""``smokerdet export``: a model as one self-contained ONNX file.

The file carries what the model needs to answer: its threshold, preprocessing and TTA, its
familiarity stats and rehearsal rows (:func:`smokerdet.models.export.export_onnx`). Asked to
(``--refit-familiarity DATA``), the familiarity stats are first fitted anew on a dataset
(:func:`smokerdet.inference.familiarity.refit`): running the model over photos is why this
step lives here, above :mod:`smokerdet.models`.

Example:
    >>> from smokerdet.inference.artifact import export_model
    >>> from smokerdet.models import ExportConfig
    >>> export_model(ExportConfig("mymodel")).familiarity  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import replace

from smokerdet.inference import familiarity
from smokerdet.models import ExportConfig, ExportResult, export_onnx


def export_model(cfg: ExportConfig) -> ExportResult:
    """Export ``cfg.model`` to ONNX, carrying its familiarity stats (refitted first on
    ``cfg.refit_familiarity`` when given).

    Raises:
        ModelNotFoundError, CheckpointError: no usable model.
        DatasetLayoutError: the ``--refit-familiarity`` folder is no dataset, or too small.
        ExportError: the architecture cannot be exported, or the file disagrees with torch.
    """
    if cfg.refit_familiarity is not None:
        familiarity.refit(cfg.model, cfg.refit_familiarity)
    result = export_onnx(cfg.model, out=cfg.out)
    return replace(result, refitted=cfg.refit_familiarity is not None)
