"""Scoring many photos: predict, evaluate, inputs and sharded result files; videos, snapshot
URLs and live sources (watch).

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
from smokerdet.scoring.urls import is_url, redact
from smokerdet.scoring.video import is_video_path
from smokerdet.scoring.watch import (
    WatchConfig,
    WatchEvent,
    WatchSummary,
    watch,
    watch_with_model,
)

__all__ = [
    "EvalConfig",
    "EvalReport",
    "Inputs",
    "PredictConfig",
    "ScoringConfig",
    "WatchConfig",
    "WatchEvent",
    "WatchSummary",
    "evaluate",
    "expand_inputs",
    "is_url",
    "is_video_path",
    "merge_results",
    "parse_shard",
    "predict",
    "predict_shard",
    "redact",
    "watch",
    "watch_with_model",
]
