"""Run a model: from its ONNX file with onnxruntime (no torch), or through torch.

:func:`open_engine` picks the backend. An ONNX engine imports neither torch nor timm, at
import or at run time: preprocessing is PIL + numpy (:mod:`smokerdet.images`), the TTA and the
class activation maps (CAM) are numpy. A torch engine wraps the torch model and computes
Grad-CAM for its heatmaps; with a global-average-pooled linear head both maps are the same.

Example:
    >>> from smokerdet.inference.backend import open_engine
    >>> from smokerdet.data.images import load_image
    >>> engine = open_engine("default")  # doctest: +SKIP
    >>> engine.backend, engine.score([load_image("examples/smoking_0001.jpg")])  # doctest: +SKIP
    ('onnx', [0.97...])
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from smokerdet.data import preprocess, view_of

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from smokerdet.data import DataConfig
    from smokerdet.models import ModelMeta

log = logging.getLogger("smokerdet")


class Engine:
    """A model ready to score images, whatever runs it.

    Attributes:
        name: the model's name (its folder name, or the ONNX file's stem).
        meta: its metadata (arch, data config, threshold, class names, TTA).
        backend: ``onnx`` or ``torch``.
        path: the ONNX file or the model folder it was loaded from.
        metadata: the ONNX file's custom metadata (``{}`` for torch).
    """

    name: str
    meta: ModelMeta
    backend: str
    path: Path
    metadata: dict[str, str]

    def score_arrays(self, batch: np.ndarray) -> list[float]:
        """Probabilities for preprocessed ``(N, 3, S, S)`` float32 inputs, TTA applied."""
        raise NotImplementedError

    def maps_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Probabilities and raw class maps ``(N, h, w)`` (TTA-averaged, before ReLU)."""
        raise NotImplementedError

    def features_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Probabilities and pooled features ``(N, C)`` from the same forward pass.

        The features are the last feature map averaged over its grid (what the linear head
        sees); with flip TTA, the average over the photo and its mirror image, like the logit.
        """
        raise NotImplementedError

    def score_with_features(self, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """Probabilities and pooled feature vectors for RGB images (see features_arrays)."""
        if not images:
            return []
        probs, feats = self.features_arrays(self._stack(images))
        return list(zip(probs, feats, strict=True))

    def score(self, images: list[Image.Image]) -> list[float]:
        """Probabilities of smoking for RGB images, with the model's preprocessing and TTA."""
        if not images:
            return []
        return self.score_arrays(self._stack(images))

    def score_with_heatmaps(self, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """Probabilities and heatmaps: each map is in [0, 1] on the image's own pixel grid."""
        if not images:
            return []
        probs, maps = self.maps_arrays(self._stack(images))
        cfg = self.meta.data_config
        return [
            (p, to_image_grid(normalise_cam(m), im.size, cfg))
            for p, m, im in zip(probs, maps, images, strict=True)
        ]

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
