"""smokerdet: tell whether people in photos are smoking.

Everything the CLI does is a plain function here. The names below load on first use, so
``import smokerdet`` (and ``smokerdet --help``) imports neither torch, onnxruntime nor numpy.

Example:
    >>> import smokerdet
    >>> for p in smokerdet.predict(["examples/"]):  # doctest: +SKIP
    ...     print(p.path, p.label, p.probability)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from smokerdet.__about__ import __version__
from smokerdet.errors import SmokerdetError

#: Each public name and the package that defines it.
_PUBLIC = {
    "BinaryMetrics": "smokerdet.metrics",
    "binary_metrics": "smokerdet.metrics",
    "DataConfig": "smokerdet.data",
    "DatasetSplits": "smokerdet.data",
    "find_dataset": "smokerdet.data",
    "load_image": "smokerdet.data",
    "Engine": "smokerdet.inference",
    "Prediction": "smokerdet.inference",
    "open_engine": "smokerdet.inference",
    "ExportResult": "smokerdet.models",
    "LoadedModel": "smokerdet.models",
    "ModelMeta": "smokerdet.models",
    "export_onnx": "smokerdet.models",
    "load_model": "smokerdet.models",
    "EvalConfig": "smokerdet.scoring",
    "EvalReport": "smokerdet.scoring",
    "PredictConfig": "smokerdet.scoring",
    "evaluate": "smokerdet.scoring",
    "expand_inputs": "smokerdet.scoring",
    "predict": "smokerdet.scoring",
    "TrainConfig": "smokerdet.training",
    "TrainResult": "smokerdet.training",
    "train": "smokerdet.training",
}

if TYPE_CHECKING:
    from smokerdet.data import DataConfig, DatasetSplits, find_dataset, load_image
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


def __getattr__(name: str) -> Any:
    # PEP 562: a public name is imported when first used, then kept as a plain attribute.
    if name not in _PUBLIC:
        raise AttributeError(f"module 'smokerdet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__all__ = [
    "__version__",
    "binary_metrics",
    "BinaryMetrics",
    "DataConfig",
    "DatasetSplits",
    "Engine",
    "EvalConfig",
    "EvalReport",
    "evaluate",
    "expand_inputs",
    "export_onnx",
    "ExportResult",
    "find_dataset",
    "load_image",
    "load_model",
    "LoadedModel",
    "ModelMeta",
    "open_engine",
    "predict",
    "PredictConfig",
    "Prediction",
    "SmokerdetError",
    "train",
    "TrainConfig",
    "TrainResult",
]
