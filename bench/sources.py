"""The extra photo sources of ``../shared/data/extra`` at one look, for the benchmarks.

Each extra source holds one class, and its photos look unlike the Smoker Detection ones
(640x640 stretched web photos, 336 px webcam selfies). Brought to the Smoker Detection look
(centre-cropped square, 250x250, JPEG at quality 95; its own files are JPEG at quality ~100),
size and compression can no longer tell a photo's source.
"""

from __future__ import annotations

from pathlib import Path

ONE_LOOK = 250
ONE_LOOK_QUALITY = 95
CACHE = Path(__file__).resolve().parent.parent / "build" / "one-look-cache"


def one_look(src: Path, dst: Path) -> None:
    """Centre-crop ``src`` square, resize it to ``ONE_LOOK`` px and save it as JPEG."""
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        square = ImageOps.fit(im, (ONE_LOOK, ONE_LOOK), Image.LANCZOS)
    square.save(dst, quality=ONE_LOOK_QUALITY)


def looked(paths: list[Path], cache: Path = CACHE) -> list[Path]:
    """The one-look copies of ``paths`` (made once, cached under ``build/``)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        dst = cache / f"{p.parent.name}-{p.name}"
        if not dst.exists():
            one_look(p, dst)
        out.append(dst)
    return out
