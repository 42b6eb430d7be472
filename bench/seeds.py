#!/usr/bin/env python
"""Seed spread of a training recipe on fixed cross-validation folds.

``train --cv K --seed S`` uses S both to deal the folds and to train. To see how much the
training seed alone moves the result, this keeps the folds of ``--fold-seed`` and retrains
chosen folds with other seeds (the same code path as ``train --cv``: ``crossval._run_fold``).
Each run reports the held-out fold's metrics at a given threshold (the CV model's) and at the
fold model's own best-F1 threshold, and its ROC-AUC.

The recipe is the shipped model's (``scripts/build_default_model.py``'s ``RECIPE``).

Example:
    python bench/seeds.py --seeds 8 9 --folds 1 --threshold 0.45 --json bench/results/seeds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from build_default_model import RECIPE  # noqa: E402

from smokerdet.cli import app  # noqa: E402
from smokerdet.data import stratified_folds  # noqa: E402
from smokerdet.metrics import best_threshold, binary_metrics  # noqa: E402
from smokerdet.models import pick_device  # noqa: E402
from smokerdet.training import TrainReporter  # noqa: E402
from smokerdet.training.data import find_splits  # noqa: E402
from smokerdet.training.recipes.crossval import fold_run  # noqa: E402


def recipe_config(data: Path, weights: Path) -> object:
    """The shipped recipe as a TrainConfig, parsed by the CLI itself (no second copy)."""
    from typer.main import get_command

    from smokerdet.training.config import TrainConfig

    cmd = get_command(app).commands["train"]  # type: ignore[attr-defined]
    params = cmd.make_context(
        "train", [*RECIPE, "--weights", str(weights), "--data", str(data)]
    ).params
    fields = TrainConfig.__dataclass_fields__
    kwargs = {k: v for k, v in params.items() if k in fields}
    kwargs["device"] = getattr(kwargs["device"], "value", kwargs["device"])
    return TrainConfig(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/smoker-detection")
    parser.add_argument(
        "--weights", type=Path, default=REPO / "build/tf_efficientnet_lite0.in1k.safetensors"
    )
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--folds", type=int, nargs="+", default=[1], help="1-based")
    parser.add_argument("--fold-seed", type=int, default=7)
    parser.add_argument("--threshold", type=float, default=0.5, help="the CV model's")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cfg = recipe_config(args.data, args.weights)
    splits = find_splits(cfg)
    pool = [*splits.train, *splits.val]
    folds = stratified_folds(pool, cfg.cv, args.fold_seed)
    device = pick_device(cfg.device)
    runs = []
    for seed in args.seeds:
        for fold in args.folds:
            t0 = time.perf_counter()
            run = fold_run(
                replace(cfg, seed=seed),
                splits,
                folds,
                fold - 1,
                f"seed{seed}",
                TrainReporter(),
                device,
            )
            at_cv = binary_metrics(run.y, run.probs, args.threshold)
            own_t = best_threshold(run.y, run.probs)
            own = binary_metrics(run.y, run.probs, own_t)
            row = {"seed": seed, "fold": fold, "best_epoch": run.result.best_epoch,
                   "accuracy_at_cv_threshold": at_cv.accuracy, "f1_at_cv_threshold": at_cv.f1,
                   "own_threshold": own_t, "accuracy_at_own": own.accuracy, "f1_at_own": own.f1,
                   "roc_auc": at_cv.roc_auc, "seconds": time.perf_counter() - t0,
                   "scores": run.scores}  # fmt: skip
            print(json.dumps({k: v for k, v in row.items() if k != "scores"}), flush=True)
            runs.append(row)
    summary = {k: {"mean": statistics.mean(r[k] for r in runs),
                   "sd": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0}
               for k in ("accuracy_at_cv_threshold", "f1_at_cv_threshold", "roc_auc")}  # fmt: skip
    report = {
        "fold_seed": args.fold_seed,
        "threshold": args.threshold,
        "runs": runs,
        "summary": summary,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
