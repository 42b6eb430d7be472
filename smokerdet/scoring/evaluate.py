"""Evaluate a model on a dataset split, with the checkpoint's own preprocessing and no augmentation.

Photos the model was trained on are recognised by content (the SHA-256 of their bytes,
against its ``training_photos.json``, :mod:`smokerdet.models.training_photos`): the report
says how many were in-sample, and a warning says what that does to the figures.

Example:
    >>> from smokerdet.scoring.evaluate import evaluate
    >>> report = evaluate(data="examples", split="all")  # doctest: +SKIP
    >>> report.metrics.accuracy  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smokerdet import distributed
from smokerdet.data import Sample, find_dataset, fingerprint, resolve_data_root
from smokerdet.distributed import bounds
from smokerdet.errors import DatasetLayoutError, SmokerdetError
from smokerdet.inference import Engine, open_engine, score_paths
from smokerdet.metrics import BinaryMetrics, binary_metrics
from smokerdet.models import META_FILE, read_meta
from smokerdet.models import training_photos as tp
from smokerdet.scoring.config import EvalConfig

log = logging.getLogger("smokerdet")


@dataclass
class EvalReport:
    """Metrics of one model on one split, plus what could not be read.

    Attributes:
        in_sample: how many of the scored photos the model was trained on (``photos``), how
            many chose its epoch and threshold (``validation_photos``), of how many (``of``),
            and how they were recognised (``matched_by``); None when the model keeps no
            record of its training photos.
        notes: what the figures mean given those photos (also logged as warnings).
    """

    model: str
    model_path: Path
    data: Path
    split: str
    threshold: float
    metrics: BinaryMetrics
    probabilities: list[tuple[str, int, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    in_sample: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self, with_probabilities: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "model_path": str(self.model_path),
            "data": str(self.data),
            "split": self.split,
            "threshold": self.threshold,
            **self.metrics.to_dict(),
            "notes": [*self.metrics.notes, *self.notes],
            "in_sample": self.in_sample,
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
    hashes: list[str | None] = []  # of each scored photo's bytes, hashed where it was scored
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
            hashes.append(tp.file_sha256(sample.path))
    if world.distributed:
        slices = distributed.all_gather((probabilities, hashes, skipped))
        probabilities = [row for rows, _, _ in slices for row in rows]
        hashes = [h for _, rows, _ in slices for h in rows]
        skipped = [row for _, _, rows in slices for row in rows]
    if not probabilities:
        raise DatasetLayoutError(
            f"none of the {len(samples)} images of the {cfg.split} split could be read"
        )
    metrics = binary_metrics(
        [y for _, y, _ in probabilities], [p for _, _, p in probabilities], threshold
    )
    scored = {str(smp.path): smp for smp in samples}
    in_sample, notes = in_sample_photos(
        engine, [scored[p] for p, _, _ in probabilities], hashes, splits.root
    )
    if world.is_main:
        for note in notes:
            log.warning("%s", note)
    return EvalReport(
        model=engine.name,
        model_path=engine.path,
        data=splits.root,
        split=cfg.split,
        threshold=threshold,
        metrics=metrics,
        probabilities=probabilities,
        skipped=skipped,
        in_sample=in_sample,
        notes=notes,
    )


def known_photos(engine: Engine) -> tuple[tp.TrainingPhotos | None, dict[str, Any]]:
    """A model's training photos and its data fingerprint: from its folder when it has one
    (the photos only when they are of that fingerprint), else what its ONNX file carries."""
    folder = engine.path if engine.path.is_dir() else engine.path.parent
    fp: dict[str, Any] = {}
    if (folder / META_FILE).is_file():
        try:
            fp = dict(read_meta(folder).data_fingerprint)
        except SmokerdetError:
            fp = {}
    photos = tp.load(folder, fp.get("sha256")) if fp else None
    return (photos or tp.from_props(getattr(engine, "metadata", {}))), fp


def in_sample_photos(
    engine: Engine, samples: list[Sample], hashes: list[str | None], root: Path
) -> tuple[dict[str, Any] | None, list[str]]:
    """How many of the scored photos (``samples``, their bytes' ``hashes``) the model was
    trained on, and the notes that say what it does to the figures.

    A model without ``training_photos.json`` (trained before it existed) is matched by its
    data fingerprint: the scored photos are all its training photos, or nothing is known.
    """
    n = len(samples)
    photos, fp = known_photos(engine)
    if photos is not None:
        roles = [photos.role(h) for h in hashes]
        fit = sum(r in tp.TRAINED for r in roles)
        val = sum(r == "val" for r in roles)
        how = f"SHA-256 of the photos' bytes ({tp.TRAINING_PHOTOS_FILE})"
    elif (
        fp.get("sha256")
        and fp.get("n_files") == n
        and fingerprint(samples, root)["sha256"] == fp["sha256"]
    ):
        fit, val, how = n, 0, "the fingerprint of the whole training set (model.json)"
    else:
        notes = []
        if fp.get("root") and Path(fp["root"]).resolve() == Path(root).resolve():
            notes.append(
                f"{root} is the folder this model was trained on, and it keeps no list of "
                "its training photos (it predates training_photos.json): some of these "
                "photos may be in-sample"
            )
        return None, notes
    return {"photos": fit, "validation_photos": val, "of": n, "matched_by": how}, _notes(
        fit, val, n
    )


def _notes(fit: int, val: int, n: int) -> list[str]:
    """What in-sample photos do to the figures, in words."""
    if fit == n:
        return [
            f"all {n} photos were in the model's training data (in-sample): these figures "
            "are not an estimate of its accuracy on new photos"
        ]
    if fit and fit + val == n:
        return [
            f"none of the {n} photos is new to the model ({fit} trained it, {val} chose its "
            "epoch and threshold): these figures are not an estimate of its accuracy on new "
            "photos"
        ]
    notes = []
    if fit:
        notes.append(
            f"{fit} of {n} photos were in the model's training data (in-sample): the "
            "figures overstate its accuracy on new photos"
        )
    if val:
        notes.append(
            f"{val} of {n} photos are the model's validation photos, which chose its epoch "
            "and threshold: the figures are optimistic"
        )
    return notes
