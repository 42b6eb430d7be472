"""Evaluate a model on a dataset split, with the checkpoint's own preprocessing and no augmentation.

Example:
    >>> from smokerdet.scoring.evaluate import evaluate
    >>> report = evaluate(data="examples", split="all")  # doctest: +SKIP
    >>> report.metrics.accuracy  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smokerdet import distributed
from smokerdet.data import find_dataset, resolve_data_root
from smokerdet.distributed import bounds
from smokerdet.errors import DatasetLayoutError
from smokerdet.inference import open_engine, score_paths
from smokerdet.metrics import BinaryMetrics, binary_metrics
from smokerdet.scoring.config import EvalConfig


@dataclass
class EvalReport:
    """Metrics of one model on one split, plus what could not be read."""

    model: str
    model_path: Path
    data: Path
    split: str
    threshold: float
    metrics: BinaryMetrics
    probabilities: list[tuple[str, int, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self, with_probabilities: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "model_path": str(self.model_path),
            "data": str(self.data),
            "split": self.split,
            "threshold": self.threshold,
            **self.metrics.to_dict(),
            "skipped": [{"path": p, "error": e} for p, e in self.skipped],
        }
        if with_probabilities:
            d["probabilities"] = [
                {"path": p, "label": y, "probability": q} for p, y, q in self.probabilities
            ]
        return d


def evaluate(cfg: EvalConfig | None = None, **overrides: Any) -> EvalReport:
    """Score a split and compute accuracy, precision, recall, F1, specificity and ROC-AUC.

    Args:
        cfg: the options; keyword ``overrides`` build or amend one (``evaluate(split="val")``).

    Under torchrun (inside :func:`smokerdet.distributed.session`) each rank scores a
    contiguous slice of the split and every rank gets the same report, computed once over
    all the slices gathered in order.

    Raises:
        ModelNotFoundError, CheckpointError: no usable model.
        DatasetNotFoundError, DatasetLayoutError: no usable data, or the split is empty.
    """
    if cfg is None:
        cfg = EvalConfig(**overrides)
    elif overrides:
        cfg = EvalConfig(**{**cfg.__dict__, **overrides})
    data_root = resolve_data_root(cfg.data)
    splits = find_dataset(data_root, seed=cfg.seed, need_val=False)
    samples = splits.get(cfg.split)
    if not samples:
        counts = {k: sum(v.values()) for k, v in splits.counts().items()}
        raise DatasetLayoutError(
            f"the {cfg.split} split of {splits.root} is empty (images per split: {counts})",
            hint="choose another --split",
        )
    threads = distributed.threads_per_rank()
    engine = open_engine(cfg.model, backend=cfg.backend, device=cfg.device, threads=threads)
    threshold = engine.meta.threshold if cfg.threshold is None else cfg.threshold
    probabilities: list[tuple[str, int, float]] = []
    skipped: list[tuple[str, str]] = []
    world = distributed.current()
    start, stop = bounds(len(samples), world.rank, world.size)
    mine = samples[start:stop]
    paths = [s.path for s in mine]
    for scored, sample in zip(
        score_paths(engine, paths, batch_size=cfg.batch_size, workers=cfg.workers),
        mine,
        strict=True,
    ):
        if scored.probability is None:
            skipped.append((str(scored.path), scored.error or "unreadable"))
        else:
            probabilities.append((str(sample.path), sample.label, scored.probability))
    if world.distributed:
        slices = distributed.all_gather((probabilities, skipped))
        probabilities = [row for rows, _ in slices for row in rows]
        skipped = [row for _, rows in slices for row in rows]
    if not probabilities:
        raise DatasetLayoutError(
            f"none of the {len(samples)} images of the {cfg.split} split could be read"
        )
    metrics = binary_metrics(
        [y for _, y, _ in probabilities], [p for _, _, p in probabilities], threshold
    )
    return EvalReport(
        model=engine.name,
        model_path=engine.path,
        data=splits.root,
        split=cfg.split,
        threshold=threshold,
        metrics=metrics,
        probabilities=probabilities,
        skipped=skipped,
    )
