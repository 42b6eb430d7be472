#!/usr/bin/env python
"""Stress test: a model's validation metrics when the photos shift away from the dataset's look.

The Smoker Detection photos are 250x250 close-ups. Field photos are not, so each validation
photo is also scored after a shift:

- ``zoom-out``: the photo pasted small (40-60% of the side) into a 2.5x larger scene;
- ``wide`` / ``tall``: cropped to 16:9 or 9:16 (the middle kept, as a camera would frame it);
- ``jpeg-q15``: recompressed at JPEG quality 15;
- ``gray``: grayscale;
- ``low-res``: down to 64 px and back up;
- ``blur``: Gaussian blur, radius 2.

Shifts are seeded, so every model sees the same shifted photos.

Example:
    python bench/stress.py --model default --json bench/results/stress.json
"""

from __future__ import annotations

import argparse
import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageFilter, ImageOps
from tensors import eval_transform

from smokerdet.data.images import load_image
from smokerdet.data.layout import find_dataset
from smokerdet.inference.torch_backend import TorchEngine
from smokerdet.metrics import binary_metrics
from smokerdet.models.checkpoint import LoadedModel
from smokerdet.models.registry import load_model

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/smoker-detection"


def zoom_out(im: Image.Image, rng: random.Random) -> Image.Image:
    w, h = im.size
    big = (int(w * 2.5), int(h * 2.5))
    scene = im.resize((16, 16)).resize(big, Image.BILINEAR).filter(ImageFilter.GaussianBlur(8))
    scale = rng.uniform(1.0, 1.5)  # the person ends up 40-60% of the scene's side
    small = im.resize((int(w * scale), int(h * scale)))
    scene.paste(
        small, (rng.randint(0, big[0] - small.width), rng.randint(0, big[1] - small.height))
    )
    return scene


def crop_aspect(im: Image.Image, ratio: float) -> Image.Image:
    w, h = im.size
    if ratio >= 1:
        nh = int(w / ratio)
        top = (h - nh) // 2
        return im.crop((0, top, w, top + nh))
    nw = int(h * ratio)
    left = (w - nw) // 2
    return im.crop((left, 0, left + nw, h))


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


SHIFTS: dict[str, Callable[[Image.Image, random.Random], Image.Image]] = {
    "clean": lambda im, rng: im,
    "zoom-out": zoom_out,
    "wide": lambda im, rng: crop_aspect(im, 16 / 9),
    "tall": lambda im, rng: crop_aspect(im, 9 / 16),
    "jpeg-q15": lambda im, rng: jpeg(im, 15),
    "gray": lambda im, rng: ImageOps.grayscale(im).convert("RGB"),
    "low-res": lambda im, rng: im.resize((64, 64), Image.BILINEAR).resize(im.size, Image.BILINEAR),
    "blur": lambda im, rng: im.filter(ImageFilter.GaussianBlur(2)),
}


def stress(loaded: LoadedModel, data: Path, split: str = "val") -> dict[str, Any]:
    """Metrics (at the model's threshold) on each shift of the split."""
    samples = find_dataset(data).get(split)
    images = [load_image(s.path) for s in samples]
    labels = [s.label for s in samples]
    transform = eval_transform(loaded.meta.data_config)
    loaded.model.eval().to(memory_format=torch.channels_last)
    out: dict[str, Any] = {}
    for name, shift in SHIFTS.items():
        rng = random.Random(0)
        probs: list[float] = []
        for i in range(0, len(images), 32):
            batch = torch.stack([transform(shift(im, rng)) for im in images[i : i + 32]])
            probs += TorchEngine(loaded, "cpu").score_arrays(batch.numpy())
        m = binary_metrics(labels, probs, loaded.meta.threshold)
        out[name] = {"accuracy": m.accuracy, "f1": m.f1, "roc_auc": m.roc_auc}
    shifted = [v for k, v in out.items() if k != "clean"]
    out["mean_shifted"] = {
        k: sum(v[k] for v in shifted) / len(shifted) for k in ("accuracy", "f1", "roc_auc")
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="val")
    parser.add_argument("--tta", choices=["model", "hflip", "none"], default="model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    loaded = load_model(args.model)
    if args.tta != "model":
        loaded.meta.tta = None if args.tta == "none" else "hflip"
    result = stress(loaded, args.data, args.split)
    print(f"{loaded.name} ({loaded.meta.arch} {loaded.meta.data_config.input_size}px, "
          f"TTA {loaded.meta.tta}, threshold {loaded.meta.threshold:.3f}) on {args.split}")  # fmt: skip
    print(f"{'shift':<14} {'acc':>6} {'f1':>6} {'auc':>6}")
    for name, m in result.items():
        print(f"{name:<14} {m['accuracy']:>6.3f} {m['f1']:>6.3f} {m['roc_auc'] or 0:>6.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"model": loaded.name, "tta": loaded.meta.tta, **result}, indent=2)
        )


if __name__ == "__main__":
    main()
