"""``smokerdet train --cv K``: pick the epoch count and threshold by K-fold cross-validation.

The training and validation photos are pooled and dealt into K stratified folds (seeded,
:func:`smokerdet.data.stratified_folds`). Each fold is held out once while the shared epoch loop
(:func:`smokerdet.training.loop.fit`) trains a fold model on the others, validating on it as
usual (best epoch by F1, early stopping). The held-out probabilities of the K fold models
are pooled: one threshold is picked on all of them (:func:`smokerdet.metrics.best_threshold`)
and the epoch count is the median of the folds' best epochs. The final model is then trained on
all the pooled photos for that many epochs, without validation or early stopping, and saved
with the cross-validated threshold and metrics (``cv_metrics`` in ``model.json``). The test
split is never touched. Fold models are temporary and removed.

Near-duplicate photos are not grouped into one fold: spotting them would mean decoding and
comparing every photo first. The public dataset's known near-duplicate pairs straddle its
withheld Testing split, which cross-validation does not use, so they do not leak between folds.

Example:
    >>> from smokerdet.training import TrainConfig, train
    >>> result = train(TrainConfig(arch="resnet10t", pretrained=False,
    ...                            data="examples", epochs=2, cv=3))  # doctest: +SKIP
    >>> result.threshold, result.mean["f1"], result.sd["f1"]  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet import distributed
from smokerdet._io import atomic_write_json
from smokerdet.data import check_per_class, stratified_folds
from smokerdet.errors import ConfigError
from smokerdet.metrics import BinaryMetrics, best_threshold, binary_metrics
from smokerdet.models import META_FILE, load_model, lock_files, pick_device, read_meta
from smokerdet.training import artifacts, loop
from smokerdet.training.data import find_splits
from smokerdet.training.report import TrainingInterrupted, TrainReporter, TrainResult
from smokerdet.training.start import check_free, claim, run_name
from smokerdet.training.validation import score_samples

if TYPE_CHECKING:
    from smokerdet.data import DatasetSplits, Sample
    from smokerdet.training.config import TrainConfig

__all__ = ["CVFold", "CVResult", "cross_validate"]

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


def cross_validate(
    cfg: TrainConfig,
    reporter: TrainReporter | None = None,
    *,
    splits: DatasetSplits | None = None,
    device: str | None = None,
) -> CVResult:
    """Cross-validate ``cfg`` with ``cfg.cv`` folds, then train and save the final model.

    :func:`smokerdet.training.train.train` runs it for ``--cv K``; under torchrun call it
    through ``train``, which joins the process group.

    Args:
        cfg: the options; ``cfg.cv`` is the number of folds.
        reporter: receives the progress of every fold model and of the final model.
        splits: the dataset's splits; default: those found in ``cfg.data``.
        device: where to train (resolved); default: ``cfg.device`` resolved.

    Raises:
        ConfigError: ``--cv`` larger than the smallest class, or the name is taken.
        TrainingInterrupted: Ctrl-C; the run must start again (fold models are removed).
    """
    if cfg.cv < 2:
        raise ConfigError(f"--cv must be at least 2 to cross-validate, got {cfg.cv}")
    reporter = reporter or TrainReporter()
    device = device or pick_device(cfg.device)
    splits = splits or find_splits(cfg)
    pool = [*splits.train, *splits.val]
    check_per_class(
        pool,
        cfg.cv,
        purpose="to cross-validate",
        photos="training and validation photos",
        why=" (each fold holds both classes)",
        flag="--cv",
    )
    name = distributed.on_main(lambda: check_free(run_name(cfg), cfg.overwrite).name)
    folds = stratified_folds(pool, cfg.cv, cfg.seed)
    try:
        runs = [fold_run(cfg, splits, folds, i, name, reporter, device) for i in range(cfg.cv)]
        return _final(cfg, splits, pool, runs, name, reporter, device)
    except TrainingInterrupted as e:
        # Not resumable: the folds are gone and --resume would not know the final run's photos.
        raise TrainingInterrupted(
            f"cross-validation of {name} interrupted",
            hint="start again with the same command, adding --overwrite if it had begun the "
            "final model",
        ) from e


@dataclass
class FoldRun:
    """One fold model's run and its scores of the held-out photos."""

    result: TrainResult
    held_out: list[Sample]
    scores: list[tuple[str, int, float]]  # (path, label, probability) of the held-out photos

    @property
    def y(self) -> list[int]:
        return [label for _, label, _ in self.scores]

    @property
    def probs(self) -> list[float]:
        return [p for _, _, p in self.scores]


def fold_run(
    cfg: TrainConfig,
    splits: DatasetSplits,
    folds: list[list[Sample]],
    i: int,
    name: str,
    reporter: TrainReporter,
    device: str,
) -> FoldRun:
    """Train on every fold but ``i``, score fold ``i``; the fold model is removed after."""
    started = time.perf_counter()
    rest = [s for j, fold in enumerate(folds) if j != i for s in fold]
    fold_splits = replace(splits, train=rest, val=folds[i], test=[])
    fold_name = f"{name[:48]}.cv-fold{i + 1}of{cfg.cv}"  # a temporary folder, never kept
    fold_cfg = replace(cfg, cv=0, name=fold_name, overwrite=True)
    main = distributed.current().is_main
    folder: Path | None = None
    try:
        with ExitStack() as stack:
            folder = distributed.on_main(lambda: claim(fold_name, stack, overwrite=True))
            run = loop.fit(fold_cfg, folder, fold_splits, reporter, device=device, export=False)
            # The main rank saved the fold's best epoch: it scores it, the others get the rows.
            path = str(folder)
            scores = distributed.on_main(lambda: score_samples(load_model(path), folds[i], device))
    finally:
        if main and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            for leftover in lock_files(folder):
                leftover.unlink(missing_ok=True)
    return FoldRun(run.result(started), folds[i], scores)


def _final(
    cfg: TrainConfig,
    splits: DatasetSplits,
    pool: list[Sample],
    runs: list[FoldRun],
    name: str,
    reporter: TrainReporter,
    device: str,
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
    final_splits = replace(splits, train=pool, val=[], test=[])
    started = time.perf_counter()
    with ExitStack() as stack:
        folder = distributed.on_main(lambda: claim(name, stack, overwrite=cfg.overwrite))
        run = loop.fit(final_cfg, folder, final_splits, reporter, device=device)
        result = CVResult(
            k=cfg.cv,
            epochs=epochs,
            threshold=threshold,
            folds=folds,
            pooled=binary_metrics(y, probs, threshold),
            final=run.result(started),
            oof=[row for r in runs for row in r.scores],
            mean={k: _stat(statistics.mean, folds, k) for k in SUMMARY_KEYS},
            sd={k: _stat(statistics.stdev, folds, k) for k in SUMMARY_KEYS},
        )
        result.final.threshold = threshold
        if distributed.current().is_main:
            _store(folder, result)
            artifacts.finish(folder, final_splits, run.state.history)
        loop.end_run(folder)
    return result


def _stat(fn: Any, folds: list[CVFold], key: str) -> float | None:
    values = [getattr(f.metrics, key) for f in folds]
    values = [v for v in values if v is not None]
    return fn(values) if len(values) >= 2 else None


def _store(folder: Path, result: CVResult) -> None:
    """Give the final model its cross-validated threshold and metrics in ``model.json`` (its
    ONNX twin follows when the folder is finished). The weights, and so the familiarity stats
    fitted to them, stay as saved."""
    meta = read_meta(folder)
    meta.threshold = result.threshold
    meta.cv_metrics = result.cv_metrics()
    atomic_write_json(folder / META_FILE, meta.to_dict())
