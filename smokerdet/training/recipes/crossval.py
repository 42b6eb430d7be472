"""``smokerdet train --cv K``: pick the epoch count and threshold by K-fold cross-validation.

The training and validation photos are pooled and dealt into K stratified folds (seeded). Each
fold is held out once while :func:`smokerdet.training.train.train` trains on the others, validating on
it as usual (best epoch by F1, early stopping). The held-out probabilities of the K fold models
are pooled: one threshold is picked on all of them (:func:`smokerdet.metrics.best_threshold`)
and the epoch count is the median of the folds' best epochs. The final model is then trained on
all the pooled photos for that many epochs, without validation or early stopping, and saved
with the cross-validated threshold and metrics (``cv_metrics`` in ``model.json``). The test
split is never touched. Fold models are temporary and removed.

Near-duplicate photos are not grouped into one fold: spotting them would mean decoding and
comparing every photo first. The public dataset's known near-duplicate pairs straddle its
withheld Testing split, which cross-validation does not use, so they do not leak between folds.

Example:
    >>> from smokerdet.training.recipes.crossval import cross_validate
    >>> from smokerdet.training.train import TrainConfig
    >>> result = cross_validate(TrainConfig(arch="resnet10t", pretrained=False,
    ...                                     data="examples", epochs=2, cv=3))  # doctest: +SKIP
    >>> result.threshold, result.mean["f1"], result.sd["f1"]  # doctest: +SKIP
"""

from __future__ import annotations

import random
import shutil
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from smokerdet._io import atomic_write_json
from smokerdet.errors import ConfigError
from smokerdet.metrics import BinaryMetrics, best_threshold, binary_metrics
from smokerdet.models import META_FILE, load_model, name_stem, pick_device, read_meta
from smokerdet.paths import models_dir
from smokerdet.training.loop import (
    TrainingInterrupted,
    TrainReporter,
    export_saved,
    find_splits,
    score_samples,
)
from smokerdet.training.train import TrainResult, head_recipe, train

if TYPE_CHECKING:
    from smokerdet.data import DatasetSplits, Sample
    from smokerdet.training.config import TrainConfig

__all__ = ["CVFold", "CVResult", "cross_validate", "make_folds"]

#: The per-fold numbers averaged into the mean and standard deviation.
SUMMARY_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc")


@dataclass
class CVFold:
    """One fold: its model's best epoch and own threshold, and its metrics on the held-out
    photos at the cross-validated (pooled) threshold."""

    fold: int
    n_train: int
    n_val: int
    best_epoch: int
    threshold: float
    metrics: BinaryMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "best_epoch": self.best_epoch,
            "threshold": self.threshold,
            "metrics": self.metrics.to_dict(),
        }


@dataclass
class CVResult:
    """What ``train --cv`` produced: the folds, their summary, and the final model."""

    k: int
    epochs: int
    threshold: float
    folds: list[CVFold]
    pooled: BinaryMetrics
    final: TrainResult
    oof: list[tuple[str, int, float]]  # every held-out (path, label, probability), pooled
    mean: dict[str, float | None] = field(default_factory=dict)
    sd: dict[str, float | None] = field(default_factory=dict)

    def cv_metrics(self) -> dict[str, Any]:
        """What ``model.json`` stores under ``cv_metrics``."""
        return {
            "kind": "cross-validated (out-of-fold), not a held-out test",
            "k": self.k,
            "epochs": self.epochs,
            "threshold": self.threshold,
            "folds": [f.to_dict() for f in self.folds],
            "mean": self.mean,
            "sd": self.sd,
            "pooled_oof": self.pooled.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        oof = [{"path": p, "label": y, "probability": pr} for p, y, pr in self.oof]
        return {**self.final.to_dict(), "cv": {**self.cv_metrics(), "oof": oof}}


def make_folds(samples: list[Sample], k: int, seed: int) -> list[list[Sample]]:
    """``k`` stratified folds: each class shuffled (seeded) and dealt round-robin."""
    folds: list[list[Sample]] = [[] for _ in range(k)]
    for label in (0, 1):
        group = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        random.Random(f"{seed}-{label}").shuffle(group)
        for i, sample in enumerate(group):
            folds[i % k].append(sample)
    return folds


def check_folds(k: int, samples: list[Sample]) -> None:
    """Every fold must hold photos of both classes, so ``k`` <= the smallest class."""
    pos = sum(s.label for s in samples)
    counts = {"smoking": pos, "not_smoking": len(samples) - pos}
    smallest = min(counts, key=counts.__getitem__)
    if k > counts[smallest]:
        raise ConfigError(
            f"--cv {k} is larger than the smallest class: the training and validation photos "
            f"hold {counts['smoking']} smoking and {counts['not_smoking']} not_smoking",
            hint=f"use --cv {counts[smallest]} or less, or add {smallest} photos"
            if counts[smallest] >= 2
            else f"add {smallest} photos",
        )


def cross_validate(
    cfg: TrainConfig, reporter: TrainReporter | None = None
) -> CVResult | TrainResult:
    """Cross-validate ``cfg`` with ``cfg.cv`` folds, then train and save the final model.

    Raises:
        ConfigError: ``--cv`` larger than the smallest class, or the name is taken.
        TrainingInterrupted: Ctrl-C; the run must start again (fold models are removed).
        Everything :func:`smokerdet.training.train.train` raises.
    """
    splits = find_splits(cfg)
    if head_recipe(cfg, splits):  # it cross-validates inside the site's photos itself
        return train(cfg, reporter, splits=splits)
    if cfg.cv < 2:
        raise ConfigError(f"--cv must be at least 2 to cross-validate, got {cfg.cv}")
    pool = [*splits.train, *splits.val]
    check_folds(cfg.cv, pool)
    name = (
        cfg.name
        or f"{name_stem(cfg.init) if cfg.init else cfg.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    if (models_dir() / name).exists() and not cfg.overwrite:
        raise ConfigError(
            f"a model named {name!r} already exists at {models_dir() / name}",
            hint="choose another --name, or pass --overwrite to replace it",
        )
    folds = make_folds(pool, cfg.cv, cfg.seed)
    try:
        runs = [_run_fold(cfg, splits, folds, i, name, reporter) for i in range(cfg.cv)]
        return _finish(cfg, splits, pool, runs, name, reporter)
    except TrainingInterrupted as e:
        # Not resumable: the folds are gone and --resume would not know the final run's photos.
        raise TrainingInterrupted(
            f"cross-validation of {name} interrupted",
            hint="start again with the same command, adding --overwrite if it had begun the "
            "final model",
        ) from e


@dataclass
class _FoldRun:
    result: TrainResult
    held_out: list[Sample]
    scores: list[tuple[str, int, float]]  # (path, label, probability) of the held-out photos

    @property
    def y(self) -> list[int]:
        return [label for _, label, _ in self.scores]

    @property
    def probs(self) -> list[float]:
        return [p for _, _, p in self.scores]


def _run_fold(
    cfg: TrainConfig,
    splits: DatasetSplits,
    folds: list[list[Sample]],
    i: int,
    name: str,
    reporter: TrainReporter | None,
) -> _FoldRun:
    """Train on every fold but ``i``, score fold ``i``; the fold model is removed after."""
    rest = [s for j, fold in enumerate(folds) if j != i for s in fold]
    fold_splits = replace(splits, train=rest, val=folds[i], test=[])
    fold_name = f"{name[:48]}.cv-fold{i + 1}of{cfg.cv}"  # a temporary folder, never kept
    fold_cfg = replace(cfg, cv=0, name=fold_name, overwrite=True)
    folder = models_dir() / fold_name
    try:
        result = train(fold_cfg, reporter, splits=fold_splits)
        scores = score_samples(load_model(str(folder)), folds[i], pick_device(cfg.device))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        (folder.parent / f".{fold_name}.lock").unlink(missing_ok=True)  # model_lock's file
    return _FoldRun(result, folds[i], scores)


def _finish(
    cfg: TrainConfig,
    splits: DatasetSplits,
    pool: list[Sample],
    runs: list[_FoldRun],
    name: str,
    reporter: TrainReporter | None,
) -> CVResult:
    """Pool the out-of-fold scores, then train and save the final model on all of ``pool``."""
    y = [label for r in runs for label in r.y]
    probs = [p for r in runs for p in r.probs]
    threshold = best_threshold(y, probs)
    # Best epochs count the --lp-epochs too; the final run's --epochs counts fine-tuning only.
    best = statistics.median(r.result.best_epoch for r in runs)
    epochs = max(1, round(best) - cfg.lp_epochs)
    folds = [
        CVFold(
            fold=i + 1,
            n_train=len(pool) - len(r.held_out),
            n_val=len(r.y),
            best_epoch=r.result.best_epoch,
            threshold=r.result.threshold,
            metrics=binary_metrics(r.y, r.probs, threshold),
        )
        for i, r in enumerate(runs)
    ]
    # All photos train the final model: nothing is left to validate or stop early on. Its
    # schedule is the shorter one of `epochs`, where the folds cut a longer one short.
    final_cfg = replace(cfg, name=name, epochs=epochs, patience=0)
    final = train(final_cfg, reporter, splits=replace(splits, train=pool, val=[], test=[]))
    result = CVResult(
        k=cfg.cv,
        epochs=epochs,
        threshold=threshold,
        folds=folds,
        pooled=binary_metrics(y, probs, threshold),
        final=final,
        oof=[row for r in runs for row in r.scores],
        mean={k: _stat(statistics.mean, folds, k) for k in SUMMARY_KEYS},
        sd={k: _stat(statistics.stdev, folds, k) for k in SUMMARY_KEYS},
    )
    _store(final, result)
    return result


def _stat(fn: Any, folds: list[CVFold], key: str) -> float | None:
    values = [getattr(f.metrics, key) for f in folds]
    values = [v for v in values if v is not None]
    return fn(values) if len(values) >= 2 else None


def _store(final: TrainResult, result: CVResult) -> None:
    """Give the final model its cross-validated threshold and metrics, in ``model.json`` and
    in its ONNX twin (exported again). The weights, and so the familiarity stats fitted to
    them, stay as saved."""
    meta = read_meta(final.path)
    meta.threshold = result.threshold
    meta.cv_metrics = result.cv_metrics()
    atomic_write_json(final.path / META_FILE, meta.to_dict())
    export_saved(final.path)
    final.threshold = result.threshold
