"""Scoring many photos: predict, evaluate, inputs and sharded result files.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.scoring.config import EvalConfig, PredictConfig, ScoringConfig
from smokerdet.scoring.evaluate import EvalReport, evaluate
from smokerdet.scoring.predict import (
    Inputs,
    expand_inputs,
    merge_results,
    predict,
    predict_shard,
)
from smokerdet.scoring.shards import parse_shard

__all__ = [
    "EvalConfig",
    "EvalReport",
    "Inputs",
    "PredictConfig",
    "ScoringConfig",
    "evaluate",
    "expand_inputs",
    "merge_results",
    "parse_shard",
    "predict",
    "predict_shard",
]
