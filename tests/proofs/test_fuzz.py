"""Property-based fuzzing of the image loader and of both transforms (hypothesis, bounded).

The loader may answer hostile bytes in two ways only: an upright RGB image, or our own
``ImageLoadError``. Whatever it returns, the eval and the training transform must turn into a
finite tensor of the model's input shape.
"""

from __future__ import annotations

import io

import pytest
import torch
from conftest import synthetic_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smokerdet.data.augment import train_transform
from smokerdet.data.images import DataConfig, load_image, preprocess
from smokerdet.errors import ImageLoadError

CFG = DataConfig(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, tuple[str, bytes]]:
    """Small real files, one per decoder we fuzz: name -> (Pillow format name, bytes)."""
    im = synthetic_image(1, 2, 24)
    frames = [synthetic_image(i % 2, 10 + i, 24) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    return {
        "jpg": ("JPEG", _encode(im, "JPEG", quality=80)),
        "progressive_jpg": ("JPEG", _encode(im, "JPEG", progressive=True)),
        "png": ("PNG", _encode(synthetic_image(0, 3, 24), "PNG")),
        "palette_png": ("PNG", _encode(im.convert("P"), "PNG", transparency=0)),
        "gif": ("GIF", gif.getvalue()),
        "webp": ("WEBP", _encode(im, "WEBP", quality=70)),
        "webp_lossless": ("WEBP", _encode(im.convert("RGBA"), "WEBP", lossless=True)),
        "tiff": ("TIFF", _encode(im, "TIFF")),
        "tiff_deflate": ("TIFF", _encode(im, "TIFF", compression="tiff_adobe_deflate")),
        "tiff_16bit": ("TIFF", _encode(Image.new("I;16", (20, 12), 40000), "TIFF")),
    }


SEEDS = _seeds()


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_seeds_are_real_files_of_their_format(kind, tmp_path):
    fmt, blob = SEEDS[kind]
    with Image.open(io.BytesIO(blob)) as im:
        assert im.format == fmt  # a seed in the wrong format would fuzz the wrong decoder
    path = tmp_path / f"seed.{kind}"
    path.write_bytes(blob)
    assert load_image(path).mode == "RGB"


def _check_transforms(im: Image.Image, seed: int) -> None:
    def the_preprocessor(photo: Image.Image) -> torch.Tensor:
        return torch.from_numpy(preprocess(photo, CFG))

    for transform in (the_preprocessor, train_transform(CFG)):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            x = transform(im)
        assert tuple(x.shape) == (3, 16, 16) and x.dtype == torch.float32
        assert torch.isfinite(x).all()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt tags
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    # One failing example is enough. Keeping every distinct failure keeps its traceback, and
    # with it each half-decoded image; under bench/mutate.py's memory cap that once ended the
    # run in a MemoryError inside pytest or a segfault instead of a test failure.
    report_multiple_bugs=False,
)
@given(data=st.data())
def test_loader_property_random_and_mutated_bytes(tmp_path, data):
    """Random bytes, and real files with bytes overwritten, inserted, deleted and cut off."""
    kind = data.draw(st.sampled_from(["random", *sorted(SEEDS)]), label="kind")
    if kind == "random":
        blob = data.draw(st.binary(max_size=2048))
    else:
        buf = bytearray(SEEDS[kind][1])
        for _ in range(data.draw(st.integers(1, 8), label="edits")):
            i = data.draw(st.integers(0, len(buf) - 1))
            op = data.draw(st.sampled_from(["set", "insert", "delete"]))
            if op == "set":
                buf[i] = data.draw(st.integers(0, 255))
            elif op == "insert":
                buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
            elif len(buf) > 1:
                del buf[i : i + data.draw(st.integers(1, 16))]
        blob = bytes(buf[: data.draw(st.integers(1, len(buf)), label="cut")])
    path = tmp_path / "fuzz.img"
    path.write_bytes(blob)
    try:
        im = load_image(path)
    except ImageLoadError:
        return
    assert im.mode == "RGB" and im.width >= 1 and im.height >= 1
    _check_transforms(im, data.draw(st.integers(0, 2**31 - 1), label="torch seed"))


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(1, 160),
    height=st.integers(1, 160),
    input_size=st.integers(8, 48),
    mean=st.tuples(*[st.floats(0.0, 1.0)] * 3),
    interpolation=st.sampled_from(["bilinear", "bicubic", "nearest"]),
    colour=st.tuples(*[st.integers(0, 255)] * 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_train_transform_property(width, height, input_size, mean, interpolation, colour, seed):
    """Any RGB image the loader can return, any data config: a finite input-sized tensor."""
    cfg = DataConfig(
        input_size=input_size,
        mean=mean,
        std=(0.229, 0.224, 0.225),
        interpolation=interpolation,
    )
    im = Image.new("RGB", (width, height), colour)
    im.paste(synthetic_image(1, seed % 1000, 8), (width // 3, height // 3))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = train_transform(cfg)(im)
    assert tuple(x.shape) == (3, input_size, input_size) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
