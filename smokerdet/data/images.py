"""Image loading and model-input preprocessing with PIL and numpy only (no torch).

:func:`load_image` opens a path or bytes as an upright RGB image, or raises
:class:`~smokerdet.errors.ImageLoadError` with a reason a person can read. :func:`preprocess`
turns it into the normalised ``(3, S, S)`` float32 array the model takes: the one
preprocessor of every backend, torch included (training's augmentation has its own).

Example:
    >>> from smokerdet.data.images import DataConfig
    >>> from smokerdet.data.images import load_image, preprocess
    >>> cfg = DataConfig(input_size=256, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> preprocess(load_image("examples/smoking_0001.jpg"), cfg).shape  # doctest: +SKIP
    (3, 256, 256)
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from smokerdet.errors import ImageLoadError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# ---------------------------------------------------------------------------------------------
# Preprocessing: built from the data config a checkpoint stores, never hard-coded at call sites

ResizeMode = Literal["letterbox", "crop", "squash"]


@dataclass(frozen=True)
class DataConfig:
    """How images are turned into model inputs. Saved in every checkpoint.

    Attributes:
        input_size: side of the square model input, in pixels.
        mean: per-channel mean used to normalise (RGB, 0-1 scale).
        std: per-channel std used to normalise.
        interpolation: ``bilinear`` or ``bicubic``.
        crop_pct: fraction kept by the centre crop when ``resize_mode`` is ``crop``.
        resize_mode: ``letterbox`` keeps the whole photo and its aspect ratio, padding the short
            side; ``crop`` is timm's resize-then-centre-crop; ``squash`` ignores aspect ratio.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    resize_mode: ResizeMode = "letterbox"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bicubic")),
            crop_pct=float(d.get("crop_pct", 1.0)),
            resize_mode=d.get("resize_mode", "letterbox"),
        )

    @property
    def fill(self) -> tuple[int, int, int]:
        """Padding colour: the dataset mean, which normalises to zero."""
        return tuple(round(255 * m) for m in self.mean)  # type: ignore[return-value]


#: Largest image accepted, in pixels (a decompression-bomb guard): about 8000 x 8000.
MAX_IMAGE_PIXELS = 64_000_000


def _to_rgb(im: Image.Image) -> Image.Image:
    from PIL import Image

    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        # Transparent pixels hold arbitrary colours; show them as a neutral white background.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _open(source: str | os.PathLike[str] | bytes, name: object) -> Any:
    from PIL import Image

    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError(name, "empty file")
        return Image.open(io.BytesIO(bytes(source)))
    p = Path(source)
    if p.is_dir():
        raise ImageLoadError(p, "is a directory")
    # Read a byte rather than trust st_size: files in /proc report 0 and fail on read.
    with open(p, "rb") as f:
        if not f.read(1):
            raise ImageLoadError(p, "empty file")
    return Image.open(p)


@dataclass(frozen=True)
class Photo:
    """A decoded photo and its own size.

    Attributes:
        image: the upright RGB image; smaller than the photo when a JPEG was decoded at
            reduced scale (``draft_size``).
        width: the upright photo's width in pixels, at full scale.
        height: its height in pixels, at full scale.
    """

    image: Image.Image
    width: int
    height: int


def load_photo(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
    name: str | None = None,
) -> Photo:
    """Open an image (a path or its bytes) as an upright RGB ``PIL.Image``, with its own size.

    Applies the EXIF orientation, converts every mode (L, P, LA, RGBA, CMYK, 16-bit) to RGB,
    takes the first frame of an animation, and refuses images over ``max_pixels`` before
    decoding them.

    Args:
        source: the image file, or its content as bytes (an upload).
        max_pixels: largest width x height accepted (decompression-bomb guard).
        draft_size: when set, a large JPEG is decoded at reduced scale, but never below this
            many pixels on its short side. It speeds up big photos that are shrunk anyway;
            :attr:`Photo.width` and :attr:`Photo.height` stay the photo's own.
        name: what error messages call a bytes source (default ``<bytes>``).

    Raises:
        ImageLoadError: the file is missing, empty, not an image, corrupt or too large.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    where: object = name or ("<bytes>" if is_bytes else Path(source))  # type: ignore[arg-type]
    try:
        with _open(source, where) as im:
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageLoadError(where, f"empty image ({width}x{height})")
            if width * height > max_pixels:
                raise ImageLoadError(
                    where, f"too large: {width}x{height} pixels (limit {max_pixels:,} pixels)"
                )
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            upright = ImageOps.exif_transpose(im)
            if upright is not None and upright.size != im.size:  # turned a quarter
                width, height = height, width
            rgb = _to_rgb(upright if upright is not None else im)
            return Photo(rgb, width, height)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(where, "no such file") from None
    except PermissionError:
        raise ImageLoadError(where, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageLoadError(where, "not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(where, f"too large: {e}") from None
    except Exception as e:  # the decoders raise many types on hostile bytes; all mean "bad file"
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise ImageLoadError(where, f"corrupt or truncated image ({reason})") from None


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """The upright RGB image of :func:`load_photo` (same arguments, same errors)."""
    return load_photo(source, max_pixels=max_pixels, draft_size=draft_size, name=name).image


def _resample(name: str) -> int:
    from PIL import Image

    return {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
    }.get(name, Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class View:
    """Where the model input lies on the original image, in its pixel coordinates.

    The input square covers the box ``(left, top, left + width, top + height)``; with a
    letterbox the box is larger than the image (the padding), with a crop it is smaller.
    """

    left: float
    top: float
    width: float
    height: float


def view_of(size: tuple[int, int], cfg: DataConfig) -> View:
    """The box of the original image that the model input covers (see :class:`View`)."""
    w, h = size
    if cfg.resize_mode == "letterbox":
        side = max(w, h)
        return View(-((side - w) // 2), -((side - h) // 2), side, side)
    if cfg.resize_mode == "crop":
        rw, rh = _short_side_size(w, h, math.floor(cfg.input_size / cfg.crop_pct))
        left, top = _crop_origin(rw, rh, cfg.input_size)
        sx, sy = w / rw, h / rh
        return View(left * sx, top * sy, cfg.input_size * sx, cfg.input_size * sy)
    return View(0, 0, w, h)


def _short_side_size(w: int, h: int, short: int) -> tuple[int, int]:
    # torchvision's Resize(int): the short side becomes `short`, the long side is truncated.
    if w <= h:
        return short, int(short * h / w)
    return int(short * w / h), short


def _crop_origin(w: int, h: int, size: int) -> tuple[int, int]:
    # torchvision's CenterCrop rounds the offsets this way.
    return int(round((w - size) / 2.0)), int(round((h - size) / 2.0))


def resize_to_input(im: Image.Image, cfg: DataConfig) -> Image.Image:
    """Letterbox, crop or squash to the input square (torchvision's resize and crop arithmetic)."""
    from PIL import Image

    size, resample = cfg.input_size, _resample(cfg.interpolation)
    if cfg.resize_mode == "letterbox":
        w, h = im.size
        if w != h:
            side = max(w, h)
            canvas = Image.new("RGB", (side, side), cfg.fill)
            canvas.paste(im, ((side - w) // 2, (side - h) // 2))
            im = canvas
        return im.resize((size, size), resample)
    if cfg.resize_mode == "crop":
        rw, rh = _short_side_size(*im.size, math.floor(size / cfg.crop_pct))
        resized = im.resize((rw, rh), resample)
        if rw < size or rh < size:  # torchvision pads with black before cropping
            canvas = Image.new("RGB", (max(rw, size), max(rh, size)), (0, 0, 0))
            canvas.paste(resized, ((max(rw, size) - rw) // 2, (max(rh, size) - rh) // 2))
            resized, (rw, rh) = canvas, canvas.size
        left, top = _crop_origin(rw, rh, size)
        return resized.crop((left, top, left + size, top + size))
    return im.resize((size, size), resample)


def normalise(im: Image.Image, cfg: DataConfig) -> np.ndarray:
    """ToTensor + Normalize in numpy: HWC uint8 -> CHW float32, same rounding as torch."""
    import numpy as np

    arr = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1))


def preprocess(im: Image.Image, cfg: DataConfig) -> np.ndarray:
    """An RGB image as the model's normalised ``(3, S, S)`` float32 input."""
    return normalise(resize_to_input(im, cfg), cfg)
