"""Training: the loop, validation, resume, and the recipes (full fine-tune, head refit, cross-validation).

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.training.config import TrainConfig
from smokerdet.training.loop import EpochStats, TrainReporter
from smokerdet.training.recipes.crossval import CVResult, cross_validate
from smokerdet.training.train import TrainResult, resume_training, train

__all__ = [
    "CVResult",
    "EpochStats",
    "TrainConfig",
    "TrainReporter",
    "TrainResult",
    "cross_validate",
    "resume_training",
    "train",
]
