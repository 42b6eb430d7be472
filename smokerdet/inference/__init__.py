"""Running a model: the engine (TTA, sigmoid, CAM once), its ONNX and torch backends, batch scoring, familiarity, heatmaps, the self-contained export.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.inference.artifact import export_model
from smokerdet.inference.backend import open_engine
from smokerdet.inference.batch import score_paths
from smokerdet.inference.engine import Engine
from smokerdet.inference.familiarity import (
    WARN_SHARE,
    Familiarity,
    fit_for_model,
    load_for,
    pooled_features,
    refit,
)
from smokerdet.inference.torch_backend import forward_probs

__all__ = [
    "Engine",
    "Familiarity",
    "WARN_SHARE",
    "export_model",
    "fit_for_model",
    "forward_probs",
    "load_for",
    "open_engine",
    "pooled_features",
    "refit",
    "score_paths",
]
