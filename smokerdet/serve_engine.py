"""The scoring engine ``smokerdet serve`` runs, and safe image decoding from uploaded bytes.

INTERIM (to be replaced when merging): :class:`TorchEngine`, :func:`open_engine` and
:func:`load_image_bytes` stand in for ``smokerdet.engine.open_engine`` and the byte loader of
``smokerdet.images``, with the same shapes, over today's torch path. ``smokerdet.serve`` only
uses the :class:`Engine` protocol, so swapping them changes no other code.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Protocol

from smokerdet.checkpoint import ModelMeta
from smokerdet.data import MAX_IMAGE_PIXELS
from smokerdet.errors import ImageLoadError

#: What an upload is called in error messages: a client's file name is never a path here.
UPLOAD = "upload"


class Engine(Protocol):
    """What serve needs from a scoring engine (``smokerdet.engine.Engine`` has this shape)."""

    name: str
    meta: ModelMeta
    backend: str

    def score(self, images: list[Any]) -> list[float]: ...

    def score_with_heatmaps(self, images: list[Any]) -> list[tuple[float, Any]]: ...


def load_image_bytes(
    data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, draft_size: int | None = None
) -> Any:
    """Decode uploaded bytes with the guards :func:`smokerdet.data.load_image` applies to files.

    The pixel cap is checked before decoding (decompression bombs), the EXIF orientation is
    applied, every mode becomes RGB, and a large JPEG is drafted exactly as ``predict`` drafts
    it, so that the same photo gets the same probability from both.

    Raises:
        ImageLoadError: the bytes are not a readable image, or it has too many pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from smokerdet.data import _to_rgb

    if not data:
        raise ImageLoadError(UPLOAD, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageLoadError(UPLOAD, f"empty image ({width}x{height})")
            if width * height > max_pixels:
                raise ImageLoadError(
                    UPLOAD, f"too large: {width}x{height} pixels (limit {max_pixels:,} pixels)"
                )
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            upright = ImageOps.exif_transpose(im)
            return _to_rgb(upright if upright is not None else im)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(UPLOAD, "not an image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(UPLOAD, f"too large: {e}") from None
    except Exception as e:  # the decoders raise many types on hostile bytes; all mean "bad file"
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise ImageLoadError(UPLOAD, f"corrupt or truncated image ({reason})") from None


# --- INTERIM: replace this class and open_engine() with smokerdet.engine.open_engine ---------
class TorchEngine:
    """Scores PIL images with a checkpoint through torch, exactly as ``predict`` does.

    Heatmaps are Grad-CAM over the backbone's last feature map, mapped back onto the photo's
    own pixel grid and normalised to [0, 1].
    """

    def __init__(self, model: Any = None, *, device: str = "auto") -> None:
        import torch

        from smokerdet.checkpoint import load_model
        from smokerdet.data import eval_transform
        from smokerdet.model import pick_device

        self.device = pick_device(device)
        self.loaded = load_model(model, device=self.device)
        if self.device == "cpu":
            self.loaded.model.to(memory_format=torch.channels_last)
        self.name, self.meta, self.backend = self.loaded.name, self.loaded.meta, "torch"
        self._transform = eval_transform(self.meta.data_config)
        self._grad_lock = threading.Lock()

    def _batch(self, images: list[Any]) -> Any:
        import torch

        return torch.stack([self._transform(im) for im in images])

    def score(self, images: list[Any]) -> list[float]:
        """p(smoking) per image, with the model's TTA."""
        from smokerdet.inference import forward_probs

        if not images:
            return []
        return forward_probs(self.loaded, self._batch(images), self.device)

    def score_with_heatmaps(self, images: list[Any]) -> list[tuple[float, Any]]:
        """p(smoking) per image and a [0, 1] heatmap of the image's own height x width."""
        probs = self.score(images)
        return [(p, self._gradcam(im)) for p, im in zip(probs, images, strict=True)]

    def _gradcam(self, image: Any) -> Any:
        import numpy as np
        import torch

        x = self._batch([image]).to(self.device)
        net = self.loaded.model
        with self._grad_lock, torch.enable_grad():
            feats = net.forward_features(x)
            logit = net.forward_head(feats).reshape(-1)[0]
            (grad,) = torch.autograd.grad(logit, feats)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * feats).sum(dim=1))[0].detach().float().cpu().numpy()
        top = float(cam.max())
        cam = cam / top if top > 0 else cam
        return _to_photo_grid(cam.astype(np.float32), image.size, self.meta)


def _to_photo_grid(cam: Any, size: tuple[int, int], meta: ModelMeta) -> Any:
    """Map a heatmap over the model's square input back onto a (width, height) photo."""
    import numpy as np
    from PIL import Image

    w, h = size
    cfg = meta.data_config
    heat = Image.fromarray(cam, mode="F")
    if cfg.resize_mode == "letterbox":
        side = max(w, h)
        square = heat.resize((side, side), Image.Resampling.BILINEAR)
        left, top = (side - w) // 2, (side - h) // 2
        out = square.crop((left, top, left + w, top + h))
    elif cfg.resize_mode == "crop":
        # The model saw a centred square of side min(w, h) * crop_pct; outside it stays 0.
        side = max(1, round(min(w, h) * cfg.crop_pct))
        out = Image.new("F", (w, h), 0.0)
        out.paste(
            heat.resize((side, side), Image.Resampling.BILINEAR), ((w - side) // 2, (h - side) // 2)
        )
    else:
        out = heat.resize((w, h), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def open_engine(model: Any = None, *, backend: str = "auto", device: str = "auto") -> TorchEngine:
    """Load ``model`` for scoring (``backend`` is accepted for the final engine's signature)."""
    return TorchEngine(model, device=device)


# --- end INTERIM ------------------------------------------------------------------------------
