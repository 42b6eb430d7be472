"""Site adaptation with few photos: refit the head of an existing model on a site's photos.

``smokerdet train --init MODEL --data SITE`` with a few dozen photos cannot fine-tune a
backbone without overfitting them, and a validation split of 6 photos cannot pick a
threshold. With up to :data:`HEAD_MAX_PHOTOS` photos (``--recipe auto``), training
therefore takes the *head* recipe instead:

1. The backbone stays frozen: every site photo is read once into its pooled features (what
   the linear head sees, flip TTA included), through ONNX Runtime when the model has it.
2. The head is refitted by L-BFGS on the site's photos (classes weighted equally) together
   with the model's rehearsal rows (:mod:`smokerdet.models.rehearsal`: a sample of its original
   training photos), with an L2 pull towards the old head. Few photos thus nudge the head;
   many move it.
3. K-fold cross-validation *inside* the site's photos scores every photo by a head fitted
   without it; those out-of-fold metrics are stored as the model's expected accuracy,
   labelled cross-validated. The threshold is :data:`THRESHOLD` (0.5), the natural cut of
   a head fitted with the classes weighted equally: picking the best-F1 threshold on the
   out-of-fold scores of a few dozen photos was measured to do worse and to swing more
   (``bench/adapt.py``; the figures are in docs/benchmarks.md).

Everything else (architecture, preprocessing, TTA, backbone) is the init model's, so the new
model exports, serves and describes its familiarity like any other.

Example:
    >>> from smokerdet.training import TrainConfig, train
    >>> train(TrainConfig(init="default", data="site-photos/", name="site"))  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smokerdet.data import (
    DatasetSplits,
    Sample,
    check_per_class,
    class_counts,
    fingerprint,
    stratified_folds,
)
from smokerdet.metrics import BinaryMetrics, binary_metrics
from smokerdet.models import REHEARSAL_FILE, Rehearsal, backbone_sha256, load_model, save_model
from smokerdet.training.artifacts import (
    export_onnx,
    fit_familiarity_on_features,
    record_training_photos,
)
from smokerdet.training.config import TrainConfig
from smokerdet.training.report import TrainReporter, TrainResult
from smokerdet.training.start import claim, publish, run_name

if TYPE_CHECKING:
    from smokerdet.models import ModelMeta

#: ``--recipe auto`` refits only the head up to this many site photos (train + val) and
#: fine-tunes the whole model above it (``bench/adapt.py``: the head recipe's gain flattens out
#: where a fine-tune has enough photos to learn from; docs/benchmarks.md).
HEAD_MAX_PHOTOS = 300
#: Folds for the site's cross-validated metrics (fewer when a class has fewer photos).
MAX_FOLDS = 5
#: The head recipe's threshold (see the module docstring for why not a picked one).
THRESHOLD = 0.5
#: Weight of the rehearsal rows' mean loss against the site photos' mean loss.
REHEARSAL_WEIGHT = 0.5
#: L2 pull of the head towards the init model's, per photo of the site (so it fades as
#: photos grow): ``PULL / n`` times the squared distance.
PULL = 2.0


@dataclass
class HeadFit:
    """A fitted linear head: ``logit = features @ weight + bias``."""

    weight: np.ndarray
    bias: float

    def probs(self, features: np.ndarray) -> np.ndarray:
        z = np.asarray(features, dtype=np.float64) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def site_photos(splits: DatasetSplits) -> list[Sample]:
    """The photos a site adapts on: training and validation, and the test split too when it
    was only carved by smokerdet (a folder without split folders): with a few dozen photos,
    every one is needed, and the cross-validation already scores each one unseen."""
    carved = "splits carved" in splits.layout
    return [*splits.train, *splits.val, *(splits.test if carved else [])]


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    start: HeadFit,
    rehearsal: Rehearsal | None = None,
    *,
    pull: float = PULL,
    rehearsal_weight: float = REHEARSAL_WEIGHT,
) -> HeadFit:
    """Refit a linear head on features ``x`` with labels ``y``, starting from ``start``.

    The loss is the class-balanced mean BCE of the site photos, plus ``rehearsal_weight``
    times the mean BCE of the rehearsal rows, plus ``pull / len(x)`` times the squared
    distance from ``start`` (weights and bias).
    """
    import torch

    xs = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    ys = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    pos = float(ys.sum())
    balance = torch.where(
        ys > 0.5, len(ys) / (2 * max(pos, 1)), len(ys) / (2 * max(len(ys) - pos, 1))
    )
    w0 = torch.as_tensor(start.weight, dtype=torch.float64)
    b0 = torch.tensor(float(start.bias), dtype=torch.float64)
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    reh = None
    if rehearsal is not None and len(rehearsal.labels) and rehearsal_weight > 0:
        reh = (
            torch.as_tensor(rehearsal.features, dtype=torch.float64),
            torch.as_tensor(rehearsal.labels, dtype=torch.float64),
        )
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    opt = torch.optim.LBFGS(
        [w, b], max_iter=300, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )
    strength = pull / max(len(ys), 1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = bce(xs @ w + b, ys, weight=balance)
        if reh is not None:
            loss = loss + rehearsal_weight * bce(reh[0] @ w + b, reh[1])
        loss = loss + strength * (((w - w0) ** 2).sum() + (b - b0) ** 2)
        loss.backward()
        return loss

    opt.step(closure)
    return HeadFit(w.detach().numpy().copy(), float(b.detach()))


def site_folds(samples: list[Sample], requested: int, seed: int) -> np.ndarray:
    """A fold index per photo, stratified (:func:`smokerdet.data.stratified_folds`):
    ``requested`` folds, or the default (at most :data:`MAX_FOLDS`, at most the smallest
    class's count)."""
    k = requested or min(MAX_FOLDS, *class_counts(samples).values())
    fold_of = {
        str(s.path): i for i, fold in enumerate(stratified_folds(samples, k, seed)) for s in fold
    }
    return np.array([fold_of[str(s.path)] for s in samples], dtype=int)


def cross_validate_head(
    x: np.ndarray,
    y: np.ndarray,
    start: HeadFit,
    rehearsal: Rehearsal | None,
    fold: np.ndarray,
    **kwargs: Any,
) -> np.ndarray:
    """Out-of-fold probabilities: each photo scored by a head fitted without its fold."""
    oof = np.zeros(len(y))
    for i in np.unique(fold):
        held = fold == i
        head = fit_head(x[~held], y[~held], start, rehearsal, **kwargs)
        oof[held] = head.probs(x[held])
    return oof


def check_site(samples: list[Sample], cv: int, root: Path) -> None:
    """At least two photos of each class (a fold of each for the cross-validation), and with
    ``--cv`` no more folds than the smallest class has photos."""
    photos = f"site photos in {root}"
    why = " (the cross-validation needs 2 folds of both classes)"
    check_per_class(samples, 2, purpose="to adapt a model", photos=photos, why=why)
    if cv:
        why = " (each fold holds both classes)"
        check_per_class(
            samples, cv, purpose="to cross-validate", photos=photos, why=why, flag="--cv"
        )


@dataclass
class _Site:
    samples: list[Sample]
    x: np.ndarray
    y: np.ndarray
    skipped: list[tuple[str, str]]


def _read_site(engine: Any, samples: list[Sample]) -> _Site:
    from smokerdet.inference import pooled_features

    kept: list[int] = []
    x = pooled_features(engine, [s.path for s in samples], kept=kept)
    kept_set = set(kept)
    skipped = [
        (str(s.path), "unreadable image") for i, s in enumerate(samples) if i not in kept_set
    ]
    chosen = [samples[i] for i in kept]
    return _Site(chosen, x, np.array([s.label for s in chosen]), skipped)


#: Fewer site photos than this get a warning: the recipe was measured from 16 photos up
#: (bench/adapt.py), and a cross-validation over fewer swings widely.
MIN_SITE_PHOTOS = 16

#: Options that shape a fine-tune, which the head recipe does not run.
FINE_TUNE_ONLY = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "img_size",
                  "lp_epochs", "label_smoothing", "ema", "patience", "tta")  # fmt: skip


def ignored_flags(cfg: TrainConfig) -> list[str]:
    """The fine-tuning ``--flags`` set to something other than their default."""
    defaults = TrainConfig()
    return [
        "--" + name.replace("_", "-")
        for name in FINE_TUNE_ONLY
        if getattr(cfg, name) != getattr(defaults, name)
    ]


def _notes(cfg: TrainConfig, photos: int) -> list[str]:
    """What to say before adapting: a site smaller than the recipe is meant for, and the
    fine-tuning flags that the head recipe does not use."""
    notes = []
    if photos < MIN_SITE_PHOTOS:
        notes.append(
            f"Warning: only {photos} site photos; head adaptation is meant for "
            f"{MIN_SITE_PHOTOS}-300, and its cross-validated figures from so few swing widely"
        )
    unused = ignored_flags(cfg)
    if unused:
        notes.append(
            f"Note: {', '.join(unused)} only shape a fine-tune and are not used by the head "
            "recipe (pass --recipe full to fine-tune the whole model)"
        )
    return notes


def adapt(cfg: TrainConfig, reporter: TrainReporter, splits: DatasetSplits) -> TrainResult:
    """The head recipe as ``train`` runs it: say what runs, claim the name, refit, save.

    Raises:
        DatasetLayoutError: a site with one class, or fewer than two photos of a class.
        ConfigError: ``--cv`` larger than the smallest class, or the name is taken.
        ModelNotFoundError, CheckpointError: no usable ``--init`` model.
    """
    started = time.perf_counter()
    pooled = site_photos(splits)
    with ExitStack() as stack:
        # The name first: a taken --name is refused before anything says "Adapting".
        folder = claim(run_name(cfg), stack, overwrite=cfg.overwrite)
        reporter.on_note(
            f"Adapting {cfg.init} head-only (--recipe {cfg.recipe}) to {len(pooled)} photos "
            f"in {splits.root}"
        )
        for note in _notes(cfg, len(pooled)):
            reporter.on_note(note)
        # Built beside its place, then moved in whole: killed at any step, the run leaves no
        # model without its familiarity stats or its ONNX twin.
        building = folder.with_name(f".{folder.name}.building")
        shutil.rmtree(building, ignore_errors=True)  # what a killed run left
        meta, metrics, record = adapt_head(cfg, building, splits)
        publish(building, folder)
    counts = {"site": class_counts(pooled)}
    return TrainResult(
        name=folder.name,
        path=folder,
        arch=meta.arch,
        best_epoch=0,
        epochs_run=0,
        stopped_early=False,
        threshold=meta.threshold,
        val_metrics=metrics,
        history=[],
        counts=counts,
        skipped=record.pop("skipped"),
        seconds=time.perf_counter() - started,
        recipe="head",
        adaptation=record,
    )


def adapt_head(
    cfg: TrainConfig, folder: Path, splits: DatasetSplits
) -> tuple[ModelMeta, BinaryMetrics, dict[str, Any]]:
    """Refit the init model's head on the site photos and save the model in ``folder``, with
    its familiarity stats, rehearsal rows, training photos and ONNX twin.

    Returns:
        The saved model's meta, the cross-validated metrics of the site photos at the
        threshold, and the adaptation record stored in its provenance, plus its time, every
        site photo's out-of-fold score (``oof``) and the unreadable photos (``skipped``).

    Raises:
        DatasetLayoutError: a site with one class, or fewer than two photos of a class.
        ConfigError: ``--cv`` larger than the smallest class.
        ModelNotFoundError, CheckpointError: no usable ``--init`` model.
    """
    from smokerdet._io import atomic_write_bytes
    from smokerdet.inference import open_engine
    from smokerdet.models import rehearsal

    started = time.perf_counter()
    pool = site_photos(splits)
    check_site(pool, cfg.cv, splits.root)
    init = load_model(cfg.init)
    engine = open_engine(str(init.path), backend="auto", device="cpu")
    site = _read_site(engine, pool)
    check_site(site.samples, cfg.cv, splits.root)  # unreadable photos may have left too few
    classifier = init.model.get_classifier()
    start = HeadFit(
        classifier.weight.detach().double().numpy().reshape(-1),
        float(classifier.bias.detach().double().numpy().reshape(-1)[0]),
    )
    rows = rehearsal.load(init.path, init.meta)
    fold = site_folds(site.samples, cfg.cv, cfg.seed)
    oof = cross_validate_head(site.x, site.y, start, rows, fold)
    threshold = THRESHOLD
    metrics = binary_metrics(list(site.y), list(oof), threshold)
    head = fit_head(site.x, site.y, start, rows)

    import torch

    with torch.no_grad():
        classifier.weight.copy_(torch.from_numpy(head.weight).reshape(classifier.weight.shape))
        classifier.bias.fill_(head.bias)
    meta = init.meta
    record = {
        "recipe": "head",
        "init": init.name,
        "photos": len(site.y),
        "smoking": int(site.y.sum()),
        "folds": int(fold.max()) + 1,
        "rehearsal_rows": 0 if rows is None else len(rows.labels),
        "pull": PULL,
        "rehearsal_weight": REHEARSAL_WEIGHT,
    }
    meta.provenance = {
        **meta.provenance,
        "backbone_weights_sha256": backbone_sha256(init.meta),
        "adaptation": record,
    }
    meta.threshold = threshold
    meta.val_metrics = {}
    meta.cv_metrics = {
        "kind": f"site adaptation: out-of-fold over the {len(site.y)} site photos, "
        f"{record['folds']} folds, at the head recipe's threshold {THRESHOLD} "
        "(cross-validated, not a test)",
        "k": record["folds"],
        "pooled_oof": metrics.to_dict(),
    }
    meta.data_fingerprint = fingerprint(site.samples, splits.root)
    meta.seed = cfg.seed
    meta.train_args = cfg.to_dict()
    meta.created = ""
    save_model(folder, init.model, meta, half=cfg.half)
    if rows is not None:
        atomic_write_bytes(folder / REHEARSAL_FILE, (init.path / REHEARSAL_FILE).read_bytes())
    # The original sample and the site's photos together: the backbone is the init model's,
    # so their features are this model's too.
    described = site.x if rows is None else np.concatenate([rows.features, site.x])
    fit_familiarity_on_features(folder, described, meta.weights_sha256)
    # The site photos refit the head; the init model's photos shaped everything else.
    record_training_photos(folder, {"fit": [smp.path for smp in site.samples]}, init.path)
    export_onnx(folder)
    oof_rows = [{"path": str(smp.path), "label": int(label), "probability": float(prob)}
                for smp, label, prob in zip(site.samples, site.y, oof, strict=True)]  # fmt: skip
    seconds = time.perf_counter() - started
    return meta, metrics, {**record, "seconds": seconds, "oof": oof_rows, "skipped": site.skipped}
