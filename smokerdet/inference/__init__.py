"""Running a model: the engine (TTA, sigmoid, pooling, CAM once) over its ONNX and torch
backends, the one batch scorer, the one prediction row, familiarity, heatmaps, the
self-contained export.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.inference.artifact import export_model
from smokerdet.inference.backend import open_engine
from smokerdet.inference.batch import (
    Decoded,
    Scored,
    decode_image,
    decode_upload,
    score_decoded,
    score_paths,
)
from smokerdet.inference.engine import Engine, Outputs
from smokerdet.inference.familiarity import (
    WARN_SHARE,
    Familiarity,
    fit_for_model,
    load_for,
    pooled_features,
    refit,
)
from smokerdet.inference.rows import EVENT_FIELDS, FIELDS, Prediction, columns

__all__ = [
    "EVENT_FIELDS",
    "FIELDS",
    "Decoded",
    "Engine",
    "Familiarity",
    "Outputs",
    "Prediction",
    "Scored",
    "WARN_SHARE",
    "export_model",
    "columns",
    "decode_image",
    "decode_upload",
    "fit_for_model",
    "load_for",
    "open_engine",
    "pooled_features",
    "refit",
    "score_decoded",
    "score_paths",
]
