"""Training-time augmentation: torchvision transforms that only training uses."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smokerdet.data.images import DataConfig


def _interp(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return {
        "bilinear": InterpolationMode.BILINEAR,
        "bicubic": InterpolationMode.BICUBIC,
        "nearest": InterpolationMode.NEAREST,
    }.get(name, InterpolationMode.BICUBIC)


class PadToSquare:
    """Pad a PIL image to a square canvas, centred, keeping its aspect ratio."""

    def __init__(self, fill: tuple[int, int, int]) -> None:
        self.fill = fill

    def __call__(self, im: Any) -> Any:
        from PIL import Image

        w, h = im.size
        if w == h:
            return im
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), self.fill)
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        return canvas


class ZoomOut:
    """With probability ``p``, paste the image at a random place in a canvas up to
    ``max_scale`` times larger: the person becomes a small part of a wider scene."""

    def __init__(self, fill: tuple[int, int, int], p: float = 0.3, max_scale: float = 2.5):
        self.fill, self.p, self.max_scale = fill, p, max_scale

    def __call__(self, im: Any) -> Any:
        from PIL import Image, ImageFilter

        if random.random() >= self.p:
            return im
        w, h = im.size
        scale = random.uniform(1.2, self.max_scale)
        cw, ch = int(w * scale), int(h * scale)
        if random.random() < 0.5:
            canvas = Image.new("RGB", (cw, ch), self.fill)
        else:  # a blurred enlargement stands in for surrounding scenery
            canvas = im.resize((cw, ch)).filter(ImageFilter.GaussianBlur(radius=max(2, cw // 16)))
        canvas.paste(im, (random.randint(0, cw - w), random.randint(0, ch - h)))
        return canvas


class RandomJPEG:
    """With probability ``p``, recompress as JPEG at a random quality (camera/web artefacts)."""

    def __init__(self, p: float = 0.25, quality: tuple[int, int] = (25, 90)) -> None:
        self.p, self.quality = p, quality

    def __call__(self, im: Any) -> Any:
        from PIL import Image

        if random.random() >= self.p:
            return im
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=random.randint(*self.quality))
        buf.seek(0)
        return Image.open(buf).convert("RGB")


def train_transform(cfg: DataConfig) -> Callable[[Any], Any]:
    """Training augmentation, normalised with the model's own mean and std.

    Random resized crops over a wide scale range, zoom-out into a larger canvas, small
    rotations, horizontal flips, colour jitter, grayscale, blur, JPEG recompression and random
    erasing: the shifts a camera or a web photo brings.
    """
    from torchvision import transforms as T

    size, interp = cfg.input_size, _interp(cfg.interpolation)
    return T.Compose(
        [
            PadToSquare(cfg.fill),
            ZoomOut(cfg.fill, p=0.3),
            # Crops stay large: a cigarette is small, and a crop that cuts it out teaches the
            # model a wrong label. Zoom-out (above) covers the other direction of scale.
            T.RandomResizedCrop(size, scale=(0.55, 1.0), ratio=(0.75, 1.333), interpolation=interp),
            T.RandomHorizontalFlip(),
            T.RandomApply(
                [T.RandomRotation(12, interpolation=_interp("bilinear"), fill=list(cfg.fill))],
                p=0.3,
            ),
            T.RandomApply([T.ColorJitter(0.3, 0.3, 0.3, 0.05)], p=0.8),
            T.RandomGrayscale(p=0.1),
            T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.15),
            RandomJPEG(p=0.25),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
            T.RandomErasing(p=0.15, scale=(0.02, 0.08)),
        ]
    )
