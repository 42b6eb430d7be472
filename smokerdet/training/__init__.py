"""Training: the recipes (full fine-tune, head refit, cross-validation) over one epoch loop,
with validation, resume and the files a finished run writes.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.training.config import TrainConfig
from smokerdet.training.recipes.crossval import CVResult, cross_validate
from smokerdet.training.report import EpochStats, TrainingInterrupted, TrainReporter, TrainResult
from smokerdet.training.train import resume_training, train

__all__ = [
    "CVResult",
    "EpochStats",
    "TrainConfig",
    "TrainReporter",
    "TrainResult",
    "TrainingInterrupted",
    "cross_validate",
    "resume_training",
    "train",
]
