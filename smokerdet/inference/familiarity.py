"""Familiarity: how much a photo looks like the photos a model was trained on.

A model is near chance on photos unlike its training set, and its probabilities do not say
so. Each model folder can hold ``familiarity.safetensors``: a compact description of its
training photos in the space of its pooled features (the last feature map averaged over its
grid, what the linear head sees), fitted once when the model is made.

The features are first compressed by a signed ``log1p(10 x)`` (pooled activations are
skewed, with a long tail: the log makes them closer to Gaussian, and separated other sources
better in ``bench/familiarity.py``; docs/benchmarks.md has the figures). The description is then a
probabilistic PCA: the mean of the training features, their top ``k``
principal directions with the variance along each, and one variance for everything outside
them. A photo's distance is its Mahalanobis distance under that covariance (the top
directions whitened, the rest scaled by the residual variance, so that nothing in the
1280-dimensional space is ignored and nothing divides by a near-zero variance). The cut is the
distance that 95% of the model's own *validation* photos stay within, so about 1 in 20
ordinary photos count as unfamiliar by design.

The ``familiarity`` reported per photo is ``cut / distance``: 1.0 at the cut, above 1 for
familiar photos, below 1 for unfamiliar ones (0.5: twice as far out as the cut).

A model trained on fewer than :data:`FEW_PHOTOS` photos still gets stats, honest about what so
few photos can say: no principal direction (an isotropic description, the mean and one
variance), and, without validation photos, the cut measured leave-one-out on the training
photos. The file records both (``method``, ``calibration``).

The stats travel with the model: inside its ONNX file (:mod:`smokerdet.models.sidecars`) and
beside its weights. :func:`load_for` prefers the first, and uses either only when it belongs
to the model's weights. ``smokerdet export NAME --refit-familiarity DATA`` fits them anew
(:func:`refit`).

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
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smokerdet._io import atomic_write_bytes
from smokerdet.data import find_dataset
from smokerdet.errors import DatasetLayoutError
from smokerdet.models import FAMILIARITY_FILE, META_FILE, read_meta, resolve_model, sidecars
from smokerdet.models.sidecars import FAMILIARITY_FORMAT as FORMAT

if TYPE_CHECKING:
    from smokerdet.inference.engine import Engine

log = logging.getLogger("smokerdet")
#: Principal directions kept (``bench/familiarity.py``: 64 separates as well as 128, in half
#: the file).
DEFAULT_DIMS = 64
#: Share of the validation photos that count as familiar.
FAMILIAR_SHARE = 0.95
#: A run warns when more than this share of its photos are unfamiliar (5% are by design).
WARN_SHARE = 0.25
#: Fewer training photos than this describe nothing (no spread to measure).
MIN_PHOTOS = 2
#: Below this many training photos the description is isotropic (no principal direction).
FEW_PHOTOS = 8
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
        components: ``(C, k)`` orthonormal principal directions (``k = 0``: isotropic).
        variances: ``(k,)`` variance of the training features along each direction.
        residual: variance per dimension outside those directions.
        cut: the distance within which ``FAMILIAR_SHARE`` of the calibration photos lie.
        weights_sha256: the SHA-256 of the weights whose features these are.
        n_train: photos fitted on; n_val: photos calibrated on (0: calibrated on training).
        log_scale: the compression applied to features first (:func:`compress`).
        calibration: what the cut was measured on: ``validation`` photos, the ``training``
            photos themselves (tight), or the training photos ``leave-one-out``.
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
    calibration: str = "validation"

    @property
    def dim(self) -> int:
        """The feature dimension these stats expect."""
        return int(self.mean.shape[0])

    @property
    def method(self) -> str:
        """``ppca-mahalanobis``, or ``isotropic-mahalanobis`` when there were too few photos."""
        return "ppca-mahalanobis" if self.components.shape[1] else "isotropic-mahalanobis"

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
            "method": self.method,
            "calibration": self.calibration,
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
        # files from before the field: calibrated on validation photos when they had any
        before = "validation" if meta.get("n_val", "0") != "0" else "training"
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
                calibration=str(meta.get("calibration") or before),
            )
        except KeyError as e:
            raise ValueError(f"missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"a field is not a number ({e})") from None
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


def _describe(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mean, principal directions, their variances and the residual variance of ``(N, C)``
    compressed features (no direction below :data:`FEW_PHOTOS` rows: one variance for all)."""
    n, c = x.shape
    mean = x.mean(axis=0)
    # SVD of the centred data: its right singular vectors are the covariance's eigenvectors.
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    eig = s**2 / max(n - 1, 1)
    k = 0 if n < FEW_PHOTOS else max(1, min(dims, n - 1, c - 1))
    total = float(eig.sum())
    # The residual variance is floored so that a tiny training set cannot make every new
    # direction infinitely surprising.
    residual = max(float(eig[k:].sum()) / max(c - k, 1), 1e-3 * total / c, 1e-12)
    variances = np.maximum(eig[:k], residual)

    def stored(a: np.ndarray) -> np.ndarray:  # calibrate on the float32 values the file keeps
        return a.astype(np.float32).astype(np.float64)

    return stored(mean), stored(vt[:k].T), stored(variances), residual


def fit(
    train: np.ndarray,
    val: np.ndarray | None,
    *,
    dims: int = DEFAULT_DIMS,
    weights_sha256: str = "",
    log_scale: float = LOG_SCALE,
) -> Familiarity:
    """Describe ``(N, C)`` training features; calibrate the cut on validation features.

    Without validation features the cut comes from the training features themselves. They
    sit closer to the mean they made than new photos would: below :data:`FEW_PHOTOS` rows,
    where that matters most, each is measured from the mean of the others (leave-one-out);
    from there on, as they are, and the cut is then a little tight. ``calibration`` in the
    result says which.

    Raises:
        ValueError: fewer than :data:`MIN_PHOTOS` training rows, or rows all alike.
    """
    raw = np.asarray(train, dtype=np.float64)
    if raw.ndim != 2 or len(raw) < MIN_PHOTOS:
        raise ValueError(f"need at least {MIN_PHOTOS} training photos, got {len(raw)}")
    n, x = len(raw), compress(raw, log_scale)
    if np.ptp(x, axis=0).max() <= 1e-9 * (1.0 + np.abs(x).max()):
        raise ValueError(f"the {n} training photos look all alike: nothing to describe")
    args = _describe(x, dims)
    stats = Familiarity(*args, 1.0, weights_sha256, n, 0, log_scale)
    if val is not None and len(val):
        calib = np.asarray(val, dtype=np.float64)
        stats = replace(stats, n_val=len(calib), calibration="validation")
        distances = stats.distance(calib)
    elif n < FEW_PHOTOS:
        # A row minus the mean of the others is n / (n - 1) times the row minus the mean.
        stats = replace(stats, calibration="leave-one-out")
        distances = stats.distance(raw) * n / (n - 1)
    else:
        stats = replace(stats, calibration="training")
        distances = stats.distance(raw)
    cut = float(np.quantile(distances, FAMILIAR_SHARE))
    if not (np.isfinite(cut) and cut > 0):  # validation photos identical to the mean
        raise ValueError(f"the cut from {len(distances)} photos is {cut}: nothing to calibrate")
    return replace(stats, cut=cut)


def save(stats: Familiarity, folder: Path) -> Path:
    """Write ``familiarity.safetensors`` into a model folder, atomically, and into the
    folder's ``model.onnx`` when it was made from the same weights (so that file alone
    carries them too)."""
    path = Path(folder) / FAMILIARITY_FILE
    atomic_write_bytes(path, stats.to_bytes())
    sidecars.embed(Path(folder))
    return path


def _feature_dim(engine: Engine) -> int | None:
    session = getattr(engine, "session", None)
    if session is not None:
        shape = session.get_outputs()[1].shape
        return shape[1] if isinstance(shape[1], int) else None
    loaded = getattr(engine, "loaded", None)
    return getattr(getattr(loaded, "model", None), "num_features", None)


def _sources(engine: Engine) -> Iterator[tuple[str, bytes | ValueError]]:
    """Where the engine's stats may be, best first: (the place, named for a note; its bytes,
    or why they cannot be read). Inside its ONNX file, then beside it."""
    field = sidecars.FIELDS[FAMILIARITY_FILE]
    if field in engine.metadata:
        where = f"field '{field}' of {engine.path}"
        try:
            yield where, sidecars.decode(engine.metadata[field])
        except ValueError as e:
            yield where, ValueError(f"is not valid ({e})")
    folder = engine.path if engine.path.is_dir() else engine.path.parent
    path = folder / FAMILIARITY_FILE
    if path.is_file():
        try:
            yield str(path), path.read_bytes()
        except OSError as e:
            yield str(path), ValueError(f"is unreadable ({e.strerror or e})")


def _checked(blob: bytes | ValueError, engine: Engine) -> Familiarity:
    """The stats in ``blob`` if they are this engine's; ValueError: the rest of a sentence
    saying why not."""
    if isinstance(blob, ValueError):
        raise blob
    try:
        stats = Familiarity.from_bytes(blob)
    except ValueError as e:
        raise ValueError(f"is not valid ({e})") from None
    ours = engine.meta.weights_sha256
    if stats.weights_sha256 != ours:
        raise ValueError(
            f"belongs to other weights (weights_sha256 {stats.weights_sha256[:12]}..., "
            f"the model's is {ours[:12]}...)"
        )
    dim = _feature_dim(engine)
    if dim is not None and dim != stats.dim:
        raise ValueError(f"describes {stats.dim} features, the model has {dim}")
    return stats


def _refit_hint(engine: Engine) -> str:
    folder = engine.path if engine.path.is_dir() else engine.path.parent
    if (folder / META_FILE).is_file():
        return f"`smokerdet export {engine.name} --refit-familiarity DATA` fits them"
    return "export the file again from its model folder, with --refit-familiarity DATA"


def load_for(engine: Engine) -> Familiarity | None:
    """The engine's familiarity stats, or None, saying why in one line on the ``smokerdet``
    logger (called once per run, so once per run it is said).

    The stats inside its ONNX file (``engine.metadata``) come first, then the folder's
    ``familiarity.safetensors``; either is used only when it is valid and belongs to the
    engine's weights. None anywhere (a model from before familiarity) is a note; stats that
    are corrupt or of other weights are a warning naming them. Neither stops predict.
    """
    problems: list[str] = []
    for where, blob in _sources(engine):
        try:
            stats = _checked(blob, engine)
        except ValueError as e:
            problems.append(f"{where} {e}")
            continue
        if problems:
            log.warning("%s: using %s instead", "; ".join(problems), where)
        return stats
    skip = f"predictions carry no familiarity score ({_refit_hint(engine)})"
    if problems:
        log.warning("%s: %s", "; ".join(problems), skip)
    else:
        log.info("%s has no familiarity stats: %s", engine.name, skip)
    return None


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


def _fit_folder(
    folder: Path,
    train_paths: Sequence[Path],
    val_paths: Sequence[Path],
    *,
    dims: int,
    backend: str,
    train_labels: Sequence[int] | None,
) -> Familiarity:
    """Fit and save a model folder's stats (and, given labels, its rehearsal rows first).

    Raises:
        ValueError: too few readable training photos, or all alike.
    """
    from smokerdet.inference.backend import open_engine
    from smokerdet.models import rehearsal

    engine = open_engine(Path(folder), backend=backend, device="cpu")
    kept: list[int] = []
    train = pooled_features(engine, train_paths, kept=kept)
    if train_labels is not None and len(train):
        labels = np.asarray(train_labels)[kept]
        rehearsal.save(Path(folder), train, labels, engine.meta.weights_sha256)
    if len(train) < MIN_PHOTOS:  # before reading the validation photos for nothing
        raise ValueError(f"need at least {MIN_PHOTOS} training photos, got {len(train)}")
    val = pooled_features(engine, val_paths) if val_paths else None
    stats = fit(train, val, dims=dims, weights_sha256=engine.meta.weights_sha256)
    save(stats, Path(folder))  # which embeds the rehearsal rows too
    return stats


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
    photos, and write them beside its weights and into its ``model.onnx``. Returns the file,
    or None (with a note) when there are too few readable training photos (:data:`MIN_PHOTOS`).

    Args:
        folder: the model folder (its weights and model.json already saved).
        train_paths: the photos it was trained on (read without augmentation).
        val_paths: its validation photos (may be empty: the cut then comes from training).
        dims: principal directions kept.
        backend: ``auto`` (ONNX when the folder has model.onnx), ``onnx`` or ``torch``.
        train_labels: the training photos' labels; given, a sample of the same features is
            also kept as the model's rehearsal rows (:mod:`smokerdet.models.rehearsal`).
    """
    try:
        _fit_folder(
            folder, train_paths, val_paths, dims=dims, backend=backend, train_labels=train_labels
        )
    except ValueError as e:
        log.info("%s has no familiarity stats: too few to describe (%s)", Path(folder).name, e)
        return None
    return Path(folder) / FAMILIARITY_FILE


def refit(
    model: str | os.PathLike[str] | None, data: str | os.PathLike[str], *, dims: int = DEFAULT_DIMS
) -> Familiarity:
    """Fit a model's familiarity stats anew on a dataset (``export --refit-familiarity``),
    and write them into its folder and its ``model.onnx``.

    The dataset is split as training split it (the model's seed): its train split is
    described, its val split calibrates the cut. Give it the photos the model was trained on.

    Raises:
        ModelNotFoundError, CheckpointError: no usable model.
        DatasetLayoutError: ``data`` is no dataset, or has too few readable training photos.
    """
    _, folder = resolve_model(model)
    meta = read_meta(folder)
    flag = f"--refit-familiarity {data}"
    hint = "give --refit-familiarity the dataset folder the model was trained on"
    try:
        splits = find_dataset(data, seed=42 if meta.seed is None else meta.seed, need_val=False)
    except DatasetLayoutError as e:
        raise DatasetLayoutError(f"{flag}: {e.message}", hint=hint) from None
    train, val = [s.path for s in splits.train], [s.path for s in splits.val]
    try:
        stats = _fit_folder(folder, train, val, dims=dims, backend="auto", train_labels=None)
    except ValueError as e:
        raise DatasetLayoutError(
            f"{flag}: its train split cannot be described ({e})", hint=hint
        ) from None
    return stats
