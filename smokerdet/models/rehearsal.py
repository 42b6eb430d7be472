"""Rehearsal: a labelled sample of a model's training photos, kept as pooled features.

Site adaptation with few photos (:mod:`smokerdet.adapt`) retrains only the linear head on
the frozen backbone. Fitted on 16 photos alone, the head forgets what the model knew; fitted
together with a sample of the original training photos, it moves only as far as the site's
photos ask. The photos themselves are not shipped (licences, size), but the head sees only
their pooled features, so those are what is kept: ``rehearsal.safetensors`` beside the
weights, up to :data:`MAX_ROWS` rows, stratified by class, in fp16 (about 1.3 MB for a
1280-feature backbone).

Features belong to a backbone: the file records the ``weights_sha256`` of the model that
computed them, and is used only by that model or by one adapted from it head-only (whose
``model.json`` records the same backbone under ``provenance.backbone_weights_sha256``).

numpy only, like :mod:`smokerdet.familiarity`.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smokerdet._io import atomic_write_bytes

if TYPE_CHECKING:
    from smokerdet.models.checkpoint import ModelMeta

log = logging.getLogger("smokerdet")

REHEARSAL_FILE = "rehearsal.safetensors"
FORMAT = "smokerdet-rehearsal/1"
#: Rows kept: enough to anchor a 1280-weight head, small enough to ship.
MAX_ROWS = 512


@dataclass
class Rehearsal:
    """Pooled features ``(N, C)`` and labels ``(N,)`` of training photos."""

    features: np.ndarray
    labels: np.ndarray
    weights_sha256: str

    def to_bytes(self) -> bytes:
        """A safetensors file: fp16 features, uint8 labels, the backbone in its metadata."""
        from safetensors.numpy import save

        tensors = {
            "features": np.ascontiguousarray(self.features, dtype=np.float16),
            "labels": np.ascontiguousarray(self.labels, dtype=np.uint8),
        }
        return save(tensors, metadata={"format": FORMAT, "weights_sha256": self.weights_sha256})

    @classmethod
    def from_bytes(cls, blob: bytes) -> Rehearsal:
        """Parse :meth:`to_bytes` output.

        Raises:
            ValueError: not such a file, or inconsistent.
        """
        from safetensors.numpy import load

        if len(blob) < 8:
            raise ValueError("file too short")
        (n,) = struct.unpack("<Q", blob[:8])
        try:
            meta = json.loads(blob[8 : 8 + n])["__metadata__"]
            tensors = load(blob)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"not a safetensors file ({e})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
        feats, labels = tensors.get("features"), tensors.get("labels")
        if feats is None or labels is None or feats.ndim != 2 or len(feats) != len(labels):
            raise ValueError("features and labels do not line up")
        if not np.isfinite(feats).all() or not set(np.unique(labels)) <= {0, 1}:
            raise ValueError("a feature is not finite or a label is not 0/1")
        return cls(feats.astype(np.float32), labels.astype(np.int64), meta["weights_sha256"])


def sample(features: np.ndarray, labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``n`` rows, the classes in their own proportion (seeded)."""
    labels = np.asarray(labels)
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = []
    for label in (0, 1):
        idx = np.flatnonzero(labels == label)
        take = round(n * len(idx) / len(labels))
        picked.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


def save(folder: Path, features: np.ndarray, labels: np.ndarray, weights_sha256: str) -> Path:
    """Write a stratified sample of ``features`` into ``folder``, atomically."""
    keep = sample(features, labels, MAX_ROWS)
    rows = Rehearsal(np.asarray(features)[keep], np.asarray(labels)[keep], weights_sha256)
    path = Path(folder) / REHEARSAL_FILE
    atomic_write_bytes(path, rows.to_bytes())
    return path


def backbone_sha256(meta: ModelMeta) -> str:
    """The weights whose backbone the model has: its own, or those it was adapted from."""
    return str(meta.provenance.get("backbone_weights_sha256") or meta.weights_sha256)


def load(folder: Path, meta: ModelMeta) -> Rehearsal | None:
    """The rehearsal rows beside a model, or None with one warning saying why."""
    path = Path(folder) / REHEARSAL_FILE
    if not path.is_file():
        log.warning(
            "%s has no %s: the head is fitted on the new photos alone, so it may forget "
            "what the model knew",
            Path(folder).name,
            REHEARSAL_FILE,
        )
        return None
    try:
        rows = Rehearsal.from_bytes(path.read_bytes())
    except (OSError, ValueError) as e:
        log.warning("%s is not valid (%s): adapting without rehearsal", path, e)
        return None
    if rows.weights_sha256 != backbone_sha256(meta):
        log.warning("%s belongs to another backbone: adapting without rehearsal", path)
        return None
    return rows
