"""Familiarity: how much a photo looks like the photos a model was trained on.

A model is near chance on photos unlike its training set, and its probabilities do not say
so. Each model folder can hold ``familiarity.safetensors``: a compact description of its
training photos in the space of its pooled features (the last feature map averaged over its
grid, what the linear head sees), fitted once when the model is made.

The features are first compressed by a signed ``log1p(10 x)`` (pooled activations are
skewed, with a long tail: the log makes them closer to Gaussian, and separated other sources
better in bench/familiarity.py: AUROC 0.90 against 0.87 without it). The description is then a
probabilistic PCA: the mean of the training features, their top ``k``
principal directions with the variance along each, and one variance for everything outside
them. A photo's distance is its Mahalanobis distance under that covariance (the top
directions whitened, the rest scaled by the residual variance, so that nothing in the
1280-dimensional space is ignored and nothing divides by a near-zero variance). The cut is the
distance that 95% of the model's own *validation* photos stay within, so about 1 in 20
ordinary photos count as unfamiliar by design.

The ``familiarity`` reported per photo is ``cut / distance``: 1.0 at the cut, above 1 for
familiar photos, below 1 for unfamiliar ones (0.5: twice as far out as the cut).

numpy only: no torch, so the ONNX path stays torch-free.

Example:
    >>> from smokerdet.inference.familiarity import fit, Familiarity
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> stats = fit(rng.normal(size=(300, 32)), rng.normal(size=(100, 32)), dims=8)
    >>> bool(stats.familiar(np.zeros((1, 32)))[0]), bool(stats.familiar(np.full((1, 32), 9.0))[0])
    (True, False)
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smokerdet._io import atomic_write_bytes

if TYPE_CHECKING:
    from smokerdet.inference.engine import Engine

log = logging.getLogger("smokerdet")

#: The file beside a model's weights.
FAMILIARITY_FILE = "familiarity.safetensors"
FORMAT = "smokerdet-familiarity/1"
#: Principal directions kept (bench/familiarity.py: 64 separates as well as 128, in half the
#: file: 330 kB for Lite0's 1280 features).
DEFAULT_DIMS = 64
#: Share of the validation photos that count as familiar.
FAMILIAR_SHARE = 0.95
#: A run warns when more than this share of its photos are unfamiliar (5% are by design).
WARN_SHARE = 0.25
#: Fewer training photos than this make no useful description.
MIN_PHOTOS = 8
#: Features are compressed by ``sign(x) log1p(LOG_SCALE |x|)`` first (0: not at all).
LOG_SCALE = 10.0


def compress(features: np.ndarray, log_scale: float) -> np.ndarray:
    """The signed log that makes pooled activations closer to Gaussian (``0``: unchanged)."""
    x = np.asarray(features, dtype=np.float64)
    return np.sign(x) * np.log1p(log_scale * np.abs(x)) if log_scale > 0 else x


@dataclass(frozen=True)
class Familiarity:
    """A model's training photos, described in its pooled-feature space.

    Attributes:
        mean: ``(C,)`` mean of the training features.
        components: ``(C, k)`` orthonormal principal directions.
        variances: ``(k,)`` variance of the training features along each direction.
        residual: variance per dimension outside those directions.
        cut: the distance within which ``FAMILIAR_SHARE`` of the validation photos lie.
        weights_sha256: the SHA-256 of the weights whose features these are.
        n_train: photos fitted on; n_val: photos calibrated on (0: calibrated on training).
        log_scale: the compression applied to features first (:func:`compress`).
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual: float
    cut: float
    weights_sha256: str
    n_train: int
    n_val: int
    log_scale: float = LOG_SCALE

    @property
    def dim(self) -> int:
        """The feature dimension these stats expect."""
        return int(self.mean.shape[0])

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``(N, C)`` features, scaled by sqrt(C)."""
        x = compress(features, self.log_scale) - self.mean
        z = x @ self.components
        inside = (z**2 / self.variances).sum(axis=1)
        outside = np.maximum((x**2).sum(axis=1) - (z**2).sum(axis=1), 0.0) / self.residual
        return np.sqrt((inside + outside) / self.dim)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Familiarity per row: ``cut / distance`` (at least 1 for a familiar photo)."""
        return self.cut / np.maximum(self.distance(features), 1e-12)

    def familiar(self, features: np.ndarray) -> np.ndarray:
        """Whether each row counts as familiar."""
        return self.score(features) >= 1.0

    def to_bytes(self) -> bytes:
        """The stats as a safetensors file, its scalars in the header's metadata."""
        from safetensors.numpy import save

        tensors = {
            "mean": self.mean.astype(np.float32),
            "components": np.ascontiguousarray(self.components, dtype=np.float32),
            "variances": self.variances.astype(np.float32),
        }
        meta = {
            "format": FORMAT,
            "method": "ppca-mahalanobis",
            "pooling": "mean over the last feature map, TTA-averaged like the logit",
            "log_scale": repr(float(self.log_scale)),
            "residual": repr(float(self.residual)),
            "cut": repr(float(self.cut)),
            "familiar_share": repr(FAMILIAR_SHARE),
            "weights_sha256": self.weights_sha256,
            "n_train": str(self.n_train),
            "n_val": str(self.n_val),
        }
        return save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Familiarity:
        """Read stats written by :meth:`to_bytes`; ValueError says what is wrong."""
        from safetensors.numpy import load

        try:
            (size,) = struct.unpack("<Q", blob[:8])
            meta = json.loads(blob[8 : 8 + size])["__metadata__"]
            tensors = load(blob)
        except Exception as e:  # safetensors raises its own types for every kind of bad file
            raise ValueError(f"not a safetensors file ({type(e).__name__})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"field 'format' is {meta.get('format')!r}, want {FORMAT!r}")
        try:
            stats = cls(
                mean=tensors["mean"].astype(np.float64),
                components=tensors["components"].astype(np.float64),
                variances=tensors["variances"].astype(np.float64),
                residual=float(meta["residual"]),
                cut=float(meta["cut"]),
                weights_sha256=str(meta["weights_sha256"]),
                n_train=int(meta["n_train"]),
                n_val=int(meta["n_val"]),
                log_scale=float(meta["log_scale"]),
            )
        except KeyError as e:
            raise ValueError(f"missing field {e.args[0]!r}") from None
        stats._check()
        return stats

    def _check(self) -> None:
        c, k = self.components.shape if self.components.ndim == 2 else (-1, -1)
        if self.mean.ndim != 1 or c != self.dim or self.variances.shape != (k,):
            raise ValueError("the tensors' shapes do not fit together")
        numbers = [self.mean, self.components, self.variances, [self.residual, self.cut]]
        if not np.isfinite(self.log_scale) or self.log_scale < 0:
            raise ValueError("field 'log_scale' is not a number >= 0")
        if not all(np.isfinite(a).all() for a in numbers):
            raise ValueError("a value is not finite")
        if self.residual <= 0 or self.cut <= 0 or (self.variances <= 0).any():
            raise ValueError("a variance or the cut is not positive")


def fit(
    train: np.ndarray,
    val: np.ndarray | None,
    *,
    dims: int = DEFAULT_DIMS,
    weights_sha256: str = "",
    log_scale: float = LOG_SCALE,
) -> Familiarity:
    """Describe ``(N, C)`` training features; calibrate the cut on validation features.

    Without validation features the cut comes from the training features themselves, which
    sit closer to their own mean: the cut is then tighter than it should be.

    Raises:
        ValueError: fewer than :data:`MIN_PHOTOS` training rows.
    """
    raw = np.asarray(train, dtype=np.float64)
    if raw.ndim != 2 or len(raw) < MIN_PHOTOS:
        raise ValueError(f"need at least {MIN_PHOTOS} training photos, got {len(raw)}")
    x = compress(raw, log_scale)
    mean = x.mean(axis=0)
    centred = x - mean
    # SVD of the centred data: its right singular vectors are the covariance's eigenvectors.
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    eig = s**2 / max(len(x) - 1, 1)
    k = max(1, min(dims, len(x) - 1, x.shape[1] - 1))
    total = float(eig.sum())
    rest = max(x.shape[1] - k, 1)
    # The residual variance is floored so that a tiny training set cannot make every new
    # direction infinitely surprising.
    residual = max(float(eig[k:].sum()) / rest, 1e-3 * total / x.shape[1], 1e-12)
    variances = np.maximum(eig[:k], residual)

    def stored(a: np.ndarray) -> np.ndarray:  # calibrate on the float32 values the file keeps
        return a.astype(np.float32).astype(np.float64)

    mean, components, variances = stored(mean), stored(vt[:k].T), stored(variances)
    args = (mean, components, variances, residual)
    stats = Familiarity(*args, 1.0, weights_sha256, len(x), 0, log_scale)
    calib = raw if val is None or len(val) == 0 else np.asarray(val, dtype=np.float64)
    cut = float(np.quantile(stats.distance(calib), FAMILIAR_SHARE))
    n_val = 0 if calib is raw else len(calib)
    return Familiarity(*args, cut, weights_sha256, len(x), n_val, log_scale)


def save(stats: Familiarity, folder: Path) -> Path:
    """Write ``familiarity.safetensors`` into a model folder, atomically."""
    path = Path(folder) / FAMILIARITY_FILE
    atomic_write_bytes(path, stats.to_bytes())
    return path


def _feature_dim(engine: Engine) -> int | None:
    session = getattr(engine, "session", None)
    if session is not None:
        shape = session.get_outputs()[1].shape
        return shape[1] if isinstance(shape[1], int) else None
    loaded = getattr(engine, "loaded", None)
    return getattr(getattr(loaded, "model", None), "num_features", None)


def load_for(engine: Engine) -> Familiarity | None:
    """The familiarity stats beside the engine's model, or None with one note saying why.

    Missing stats (a model made before familiarity existed) are a note; a file that is
    corrupt or belongs to other weights is a warning naming it. Neither stops predict.
    """
    folder = engine.path if engine.path.is_dir() else engine.path.parent
    path = folder / FAMILIARITY_FILE
    if not path.is_file():
        log.info(
            "%s has no %s: predictions carry no familiarity score "
            "(`python scripts/fit_familiarity.py --model %s --data DIR` adds one)",
            engine.name,
            FAMILIARITY_FILE,
            engine.name,
        )
        return None
    skip = "predictions carry no familiarity score"
    try:
        stats = Familiarity.from_bytes(path.read_bytes())
    except (OSError, ValueError) as e:
        log.warning("%s is not valid (%s): %s", path, e, skip)
        return None
    if stats.weights_sha256 != engine.meta.weights_sha256:
        log.warning(
            "%s belongs to other weights (weights_sha256 %s..., the model's is %s...): %s",
            path,
            stats.weights_sha256[:12],
            engine.meta.weights_sha256[:12],
            skip,
        )
        return None
    dim = _feature_dim(engine)
    if dim is not None and dim != stats.dim:
        log.warning("%s describes %d features, the model has %d: %s", path, stats.dim, dim, skip)
        return None
    return stats


def pooled_features(
    engine: Engine, paths: Sequence[Path], batch_size: int = 8, kept: list[int] | None = None
) -> np.ndarray:
    """Pooled features ``(N, C)`` of the readable photos among ``paths`` (others skipped),
    scored as predict scores them; ``kept``, when given, receives the index in ``paths`` of
    each row."""
    from smokerdet.inference.batch import score_paths

    rows: list[np.ndarray] = []
    for scored in score_paths(engine, list(paths), batch_size=batch_size, features=True):
        if scored.features is not None:  # an unreadable photo only leaves the description
            rows.append(scored.features)
            if kept is not None:
                kept.append(scored.index)
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def fit_for_model(
    folder: Path,
    train_paths: Sequence[Path],
    val_paths: Sequence[Path],
    *,
    dims: int = DEFAULT_DIMS,
    backend: str = "auto",
    train_labels: Sequence[int] | None = None,
) -> Path | None:
    """Fit a model's familiarity stats on its training photos, calibrate on its validation
    photos, and write them beside its weights. Returns the file, or None (with a note) when
    there are too few readable training photos.

    Args:
        folder: the model folder (its weights and model.json already saved).
        train_paths: the photos it was trained on (read without augmentation).
        val_paths: its validation photos (may be empty: the cut then comes from training).
        dims: principal directions kept.
        backend: ``auto`` (ONNX when the folder has model.onnx), ``onnx`` or ``torch``.
        train_labels: the training photos' labels; given, a sample of the same features is
            also kept as the model's rehearsal rows (:mod:`smokerdet.rehearsal`).
    """
    from smokerdet.inference.backend import open_engine
    from smokerdet.models import rehearsal

    engine = open_engine(Path(folder), backend=backend, device="cpu")
    kept: list[int] = []
    train = pooled_features(engine, train_paths, kept=kept)
    if train_labels is not None and len(train):
        labels = np.asarray(train_labels)[kept]
        rehearsal.save(Path(folder), train, labels, engine.meta.weights_sha256)
    if len(train) < MIN_PHOTOS:
        log.info(
            "%d readable training photos: too few to describe, so %s has no familiarity stats",
            len(train),
            engine.name,
        )
        return None
    val = pooled_features(engine, val_paths) if val_paths else None
    stats = fit(train, val, dims=dims, weights_sha256=engine.meta.weights_sha256)
    return save(stats, Path(folder))
