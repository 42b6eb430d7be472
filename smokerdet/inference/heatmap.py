"""Heatmap overlays: a photo with where the model looked painted over it (PIL + numpy only).

Example:
    >>> from smokerdet.inference.backend import open_engine
    >>> from smokerdet.inference.heatmap import write_overlay
    >>> from smokerdet.data.images import load_image
    >>> im = load_image("examples/smoking_0001.jpg")  # doctest: +SKIP
    >>> (p, heat), = open_engine().score_with_heatmaps([im])  # doctest: +SKIP
    >>> write_overlay("smoking_0001.heat.png", im, heat)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from smokerdet._io import atomic_write_bytes

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

#: Colour ramp for heat 0 -> 1: dark blue, cyan, yellow, red (a "jet"-like map).
_STOPS = ((0.0, (0, 0, 128)), (0.35, (0, 200, 255)), (0.65, (255, 230, 0)), (1.0, (220, 0, 0)))
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def colourise(heat: np.ndarray) -> np.ndarray:
    """Heat in [0, 1], shape (H, W) -> RGB uint8 (H, W, 3) along the colour ramp."""
    import numpy as np

    xs = [s for s, _ in _STOPS]
    rgb = [np.interp(heat, xs, [c[i] for _, c in _STOPS]) for i in range(3)]
    return np.stack(rgb, axis=-1).round().astype(np.uint8)


def overlay(image: Image.Image, heat: np.ndarray, opacity: float = 0.6) -> Image.Image:
    """The photo with the heatmap blended over it; cold areas keep more of the photo.

    Args:
        image: the RGB photo the heatmap belongs to.
        heat: values in [0, 1] on the photo's pixel grid, shape (height, width).
        opacity: how much colour covers the hottest pixels.
    """
    import numpy as np
    from PIL import Image

    if heat.shape != (image.height, image.width):
        raise ValueError(f"heatmap shape {heat.shape} != image size {image.size[::-1]}")
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    alpha = (opacity * (0.25 + 0.75 * heat))[..., None]
    mixed = photo * (1 - alpha) + colourise(heat).astype(np.float32) * alpha
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8), mode="RGB")


def heatmap_name(path: str | os.PathLike[str]) -> str:
    """A safe, unique PNG name for a photo's heatmap: its stem plus a hash of its path."""
    text = os.fspath(path)
    stem = _UNSAFE.sub("_", Path(text).stem).strip("._")[:60] or "image"
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{stem}-{digest}.heatmap.png"


def write_overlay(path: str | os.PathLike[str], image: Image.Image, heat: np.ndarray) -> Path:
    """Write the overlay as a PNG, atomically; return its path."""
    buf = io.BytesIO()
    overlay(image, heat).save(buf, format="PNG")
    target = Path(path)
    atomic_write_bytes(target, buf.getvalue())
    return target
