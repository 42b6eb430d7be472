"""Run a model: a backend runs the forward pass; the engine does everything else, once.

A backend implements one method, :meth:`Engine.forward`: a preprocessed batch in, the raw
logits ``(N,)`` and the last feature map ``(N, C, h, w)`` out. The engine feeds it (one
preprocessor, :func:`smokerdet.data.images.preprocess`, for every backend) and turns what it
gives into answers, in numpy: the flip TTA, the sigmoid, the pooled features (what the linear
head sees) and the class activation maps (CAM: the feature map weighted by the linear head).
The torch backend overrides :meth:`Engine.forward_maps` with Grad-CAM, which needs no linear
head; with a pooled linear head both maps are the same.

:func:`~smokerdet.inference.backend.open_engine` picks the backend; an ONNX engine imports
neither torch nor timm, at import or at run time.

Example:
    >>> from smokerdet.inference.backend import open_engine
    >>> from smokerdet.data.images import load_image
    >>> engine = open_engine("default")  # doctest: +SKIP
    >>> engine.backend, engine.score([load_image("examples/smoking_0001.jpg")])  # doctest: +SKIP
    ('onnx', [0.97...])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smokerdet.data import preprocess, view_of
from smokerdet.errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from smokerdet.data import DataConfig
    from smokerdet.models import ModelMeta

log = logging.getLogger("smokerdet")


@dataclass(frozen=True)
class Outputs:
    """What the model says about a batch, TTA applied.

    Attributes:
        probabilities: the probability of smoking of each input.
        pooled: the feature map averaged over its grid ``(N, C)``: what the linear head sees.
        maps: the raw class maps ``(N, h, w)`` before ReLU (only when asked for).
    """

    probabilities: list[float]
    pooled: np.ndarray
    maps: np.ndarray | None = None


class Engine:
    """A model ready to score images, whatever runs it.

    Attributes:
        name: the model's name (its folder name, or the ONNX file's stem).
        meta: its metadata (arch, data config, threshold, class names, TTA).
        backend: ``onnx`` or ``torch``.
        path: the ONNX file or the model folder it was loaded from.
        device: where the forward pass runs (``cpu``, ``cuda``, ``mps``).
        metadata: the ONNX file's custom metadata (``{}`` for torch).
        head: the linear head's ``(weight (C,), bias)`` for CAM, or None.
    """

    name: str
    meta: ModelMeta
    backend: str
    path: Path
    device: str = "cpu"
    metadata: dict[str, str]
    head: tuple[np.ndarray, float] | None = None

    # -----------------------------------------------------------------------------------------
    # What a backend implements

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits ``(N,)`` and the last feature map ``(N, C, h, w)`` of one pass over a
        preprocessed ``(N, 3, S, S)`` float32 batch: no TTA, no sigmoid."""
        raise NotImplementedError

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, features and raw class maps ``(N, h, w)`` of one pass: CAM by default.

        Raises:
            CheckpointError: the model has no pooled linear head (see :attr:`has_maps`).
        """
        import numpy as np

        if self.head is None:
            raise CheckpointError(
                f"{self.path}: no field 'cam_head' (the head is not pooled + linear), "
                "so heatmaps need torch",
                hint="use --backend torch for heatmaps with this model",
            )
        logits, features = self.forward(batch)
        maps = np.einsum("c,nchw->nhw", self.head[0], features.astype(np.float32))
        return logits, features, maps

    @property
    def has_maps(self) -> bool:
        """Whether this engine can draw heatmaps (:meth:`forward_maps`)."""
        return self.head is not None

    def release(self) -> None:
        """Let go of what a forked process must not share (threads); reopened when used."""

    def in_worker(self) -> Engine:
        """This engine set up inside a single-threaded worker process (see batch.py)."""
        return self

    # -----------------------------------------------------------------------------------------
    # The one path from a batch to answers

    def run(self, batch: np.ndarray, *, maps: bool = False) -> Outputs:
        """Probabilities, pooled features and (with ``maps``) class maps of a preprocessed
        ``(N, 3, S, S)`` batch, with the model's TTA.

        With flip TTA the photos and their mirror images go through one pass; the logits are
        averaged, and so are the feature maps and class maps, the mirror's flipped back.
        """
        import numpy as np

        x = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.forward_maps if maps else self.forward
        if self.meta.tta == "hflip":
            n = len(x)
            both = step(np.concatenate([x, x[..., ::-1]]))
            out = tuple((a[:n] + (a[n:] if a.ndim == 1 else a[n:, ..., ::-1])) / 2 for a in both)
        else:
            out = step(x)
        pooled = out[1].astype(np.float32).mean(axis=(2, 3))
        return Outputs(sigmoid(out[0]), pooled, out[2] if maps else None)

    def score_arrays(self, batch: np.ndarray) -> list[float]:
        """Probabilities for preprocessed ``(N, 3, S, S)`` float32 inputs, TTA applied."""
        return self.run(batch).probabilities

    def features_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Probabilities and pooled features ``(N, C)`` from the same forward pass."""
        out = self.run(batch)
        return out.probabilities, out.pooled

    def maps_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Probabilities and raw class maps ``(N, h, w)`` (TTA-averaged, before ReLU)."""
        out = self.run(batch, maps=True)
        assert out.maps is not None
        return out.probabilities, out.maps

    # -----------------------------------------------------------------------------------------
    # Decoded images in, answers out

    def score(self, images: list[Image.Image]) -> list[float]:
        """Probabilities of smoking for RGB images, with the model's preprocessing and TTA."""
        return self.score_arrays(self._stack(images)) if images else []

    def score_with_features(self, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """Probabilities and pooled feature vectors for RGB images (see :meth:`run`)."""
        if not images:
            return []
        probs, feats = self.features_arrays(self._stack(images))
        return list(zip(probs, feats, strict=True))

    def score_with_heatmaps(self, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """Probabilities and heatmaps: each map is in [0, 1] on the image's own pixel grid."""
        if not images:
            return []
        probs, maps = self.maps_arrays(self._stack(images))
        return [(p, self.heatmap(m, im.size)) for p, m, im in zip(probs, maps, images, strict=True)]

    def heatmap(self, raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A raw class map as a heatmap in [0, 1] on an image of ``size`` (width, height)."""
        return to_image_grid(normalise_cam(raw), size, self.meta.data_config)

    def _stack(self, images: list[Image.Image]) -> np.ndarray:
        import numpy as np

        return np.stack([preprocess(im, self.meta.data_config) for im in images])


def sigmoid(logits: np.ndarray) -> list[float]:
    """Probabilities from logits, in float64 (as torch's sigmoid on float32 rounds them)."""
    import numpy as np

    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).tolist()


def normalise_cam(raw: np.ndarray) -> np.ndarray:
    """ReLU, then divide by the maximum: a map in [0, 1] (all zeros if nothing is positive)."""
    import numpy as np

    cam = np.maximum(raw.astype(np.float32), 0)
    top = float(cam.max(initial=0.0))
    return cam / top if top > 0 else cam


def to_image_grid(cam: np.ndarray, size: tuple[int, int], cfg: DataConfig) -> np.ndarray:
    """Map a model-grid heatmap back through the letterbox or crop onto the image's pixels."""
    import numpy as np
    from PIL import Image

    view = view_of(size, cfg)
    box = (max(1, round(view.width)), max(1, round(view.height)))
    scaled = Image.fromarray(cam.astype(np.float32), mode="F").resize(
        box, Image.Resampling.BILINEAR
    )
    canvas = Image.new("F", size, 0.0)
    canvas.paste(scaled, (round(view.left), round(view.top)))
    return np.clip(np.asarray(canvas, dtype=np.float32), 0.0, 1.0)
