"""Site adaptation with few photos: refit the head of an existing model on a site's photos.

``smokerdet train --init MODEL --data SITE`` with a few dozen photos cannot fine-tune a
backbone without overfitting them, and a validation split of 6 photos cannot pick a
threshold. With up to :data:`HEAD_MAX_PHOTOS` photos (``--recipe auto``), training
therefore takes the *head* recipe instead:

1. The backbone stays frozen: every site photo is read once into its pooled features (what
   the linear head sees, flip TTA included), through ONNX Runtime when the model has it.
2. The head is refitted by L-BFGS on the site's photos (classes weighted equally) together
   with the model's rehearsal rows (:mod:`smokerdet.rehearsal`: a sample of its original
   training photos), with an L2 pull towards the old head. Few photos thus nudge the head;
   many move it.
3. K-fold cross-validation *inside* the site's photos scores every photo by a head fitted
   without it; those out-of-fold metrics are stored as the model's expected accuracy,
   labelled cross-validated. The threshold is :data:`THRESHOLD` (0.5), the natural cut of
   a head fitted with the classes weighted equally: picking the best-F1 threshold on the
   out-of-fold scores of a few dozen photos was measured to do worse and to swing more
   (bench/adapt.py: on a simulated site, 0.772 against 0.755 accuracy at 16 photos, 0.820
   against 0.800 at 32, 0.865 against 0.850 at 64; the picked thresholds ranged from 0.18 to
   0.78).

Everything else (architecture, preprocessing, TTA, backbone) is the init model's, so the new
model exports, serves and describes its familiarity like any other.

Example:
    >>> from smokerdet.training.config import TrainConfig
    >>> from smokerdet.training.train import train
    >>> train(TrainConfig(init="default", data="site-photos/", name="site"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smokerdet.data import DatasetSplits, Sample, fingerprint
from smokerdet.errors import DatasetLayoutError
from smokerdet.metrics import BinaryMetrics, binary_metrics
from smokerdet.models import REHEARSAL_FILE, Rehearsal, backbone_sha256, load_model, save_model

if TYPE_CHECKING:
    from smokerdet.training.config import TrainConfig

log = logging.getLogger("smokerdet")

#: ``--recipe auto`` refits only the head up to this many site photos (train + val) and
#: fine-tunes the whole model above it (bench/adapt.py: the head recipe's gain flattens out
#: by ~256 photos, where a fine-tune has enough photos to learn from).
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


def choose_recipe(recipe: str, n_photos: int) -> str:
    """``head`` or ``full`` for ``--recipe`` (``auto``: by the number of site photos)."""
    if recipe != "auto":
        return recipe
    return "head" if n_photos <= HEAD_MAX_PHOTOS else "full"


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


def folds_for(y: np.ndarray, requested: int, seed: int) -> np.ndarray:
    """A fold index per photo, stratified: ``requested`` folds, or the default (at most
    :data:`MAX_FOLDS`, at most the smallest class's count)."""
    smallest = int(min((y == 0).sum(), (y == 1).sum()))
    k = requested or min(MAX_FOLDS, smallest)
    fold = np.zeros(len(y), dtype=int)
    rng = np.random.default_rng(seed)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


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
    """Both classes, at least two photos each, and no more folds than the smallest class."""
    counts = {name: sum(s.label == label for s in samples) for label, name in
              ((1, "smoking"), (0, "not_smoking"))}  # fmt: skip
    smallest = min(counts, key=counts.__getitem__)
    if counts[smallest] < 2:
        raise DatasetLayoutError(
            f"{root} holds {counts['smoking']} smoking and {counts['not_smoking']} not_smoking "
            "photos: adapting needs at least 2 of each class to pick a threshold",
            hint=f"add {smallest} photos of the site",
        )
    if cv > counts[smallest]:
        raise DatasetLayoutError(
            f"--cv {cv} is larger than the smallest class of {root} "
            f"({counts[smallest]} {smallest} photos)",
            hint=f"use --cv {counts[smallest]} or less, or leave --cv out",
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


def adapt_head(
    cfg: TrainConfig, name: str, folder: Path, splits: DatasetSplits
) -> tuple[Any, BinaryMetrics, dict[str, Any]]:
    """The head recipe: refit the init model's head on the site photos and save the model.

    Returns:
        The saved model's meta, the cross-validated metrics of the site photos at the
        threshold, and the adaptation record stored in its provenance, plus its time and
        every site photo's out-of-fold score (``oof``).

    Raises:
        DatasetLayoutError: a site with one class, or fewer than two photos of a class.
        ModelNotFoundError, CheckpointError: no usable ``--init`` model.
    """
    from smokerdet.inference import open_engine
    from smokerdet.models import rehearsal
    from smokerdet.training.loop import export_saved

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
    fold = folds_for(site.y, cfg.cv, cfg.seed)
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
    meta.train_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    meta.created = ""
    save_model(folder, init.model, meta, half=cfg.half)
    export_saved(folder)
    if rows is not None:
        (folder / REHEARSAL_FILE).write_bytes((init.path / REHEARSAL_FILE).read_bytes())
    _fit_familiarity(folder, site.x, rows, meta.weights_sha256)
    oof_rows = [{"path": str(smp.path), "label": int(label), "probability": float(prob)}
                for smp, label, prob in zip(site.samples, site.y, oof, strict=True)]  # fmt: skip
    return meta, metrics, {**record, "seconds": time.perf_counter() - started, "oof": oof_rows}


def _fit_familiarity(folder: Path, site: np.ndarray, rows: Rehearsal | None, sha: str) -> None:
    """Describe the original sample and the site's photos together (the backbone is the
    init model's, so their features are this model's too), the cut calibrated on every
    other row."""
    from smokerdet.inference import familiarity

    x = site if rows is None else np.concatenate([rows.features, site])
    if len(x) < 2 * familiarity.MIN_PHOTOS:
        log.info("%d photos: too few to describe, so no familiarity stats", len(x))
        return
    order = np.random.default_rng(0).permutation(len(x))
    stats = familiarity.fit(x[order[::2]], x[order[1::2]], weights_sha256=sha)
    familiarity.save(stats, folder)
