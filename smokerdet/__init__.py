"""smokerdet: tell whether people in photos are smoking.

Everything the CLI does is a plain function here; importing it does not import torch.

Example:
    >>> import smokerdet
    >>> for p in smokerdet.predict(["examples/"]):  # doctest: +SKIP
    ...     print(p.path, p.label, p.probability)
"""

from smokerdet.__about__ import __version__
from smokerdet.data import DataConfig, DatasetSplits, find_dataset, load_image
from smokerdet.errors import SmokerdetError
from smokerdet.inference import Engine, Prediction, open_engine
from smokerdet.metrics import BinaryMetrics, binary_metrics
from smokerdet.models import ExportResult, LoadedModel, ModelMeta, export_onnx, load_model
from smokerdet.scoring import (
    EvalConfig,
    EvalReport,
    PredictConfig,
    evaluate,
    expand_inputs,
    predict,
)
from smokerdet.training import TrainConfig, TrainResult, train

__all__ = [
    "BinaryMetrics",
    "DataConfig",
    "DatasetSplits",
    "Engine",
    "EvalConfig",
    "EvalReport",
    "ExportResult",
    "LoadedModel",
    "ModelMeta",
    "PredictConfig",
    "Prediction",
    "SmokerdetError",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "binary_metrics",
    "evaluate",
    "expand_inputs",
    "export_onnx",
    "find_dataset",
    "load_image",
    "load_model",
    "open_engine",
    "predict",
    "train",
]
