import io
import os
from pathlib import Path

import pytest
from conftest import (
    EXAMPLES,
    synthetic_image,
    write_archive_layout,
    write_class_folders,
    write_flat,
)
from PIL import Image

from smokerdet.data.augment import train_transform
from smokerdet.data.images import MAX_IMAGE_PIXELS, DataConfig, load_image, load_photo, preprocess
from smokerdet.data.layout import find_dataset, label_from_name
from smokerdet.errors import DatasetLayoutError, ImageLoadError


def test_prefix_trap_notsmoking_is_not_smoking():
    assert label_from_name("smoking_0001.jpg") == 1
    assert label_from_name("SMOKING_0001.JPG") == 1
    assert label_from_name("notsmoking_0001.jpg") == 0
    assert label_from_name("not_smoking_7.png") == 0
    assert label_from_name("nonsmoking_1.jpg") is None
    assert label_from_name("my_smoking_1.jpg") is None


def test_archive_layout_with_doubled_folders(tmp_path):
    root = write_archive_layout(tmp_path / "ds", {"Training": 5, "Validation": 3, "Testing": 2})
    splits = find_dataset(root)
    assert "split folders" in splits.layout
    assert splits.counts() == {
        "train": {"smoking": 5, "not_smoking": 5},
        "val": {"smoking": 3, "not_smoking": 3},
        "test": {"smoking": 2, "not_smoking": 2},
    }
    notsmoking = [s for s in splits.train if s.path.name.startswith("notsmoking_")]
    assert notsmoking and all(s.label == 0 for s in notsmoking)


def test_archive_layout_without_testing_split(tmp_path):
    root = write_archive_layout(tmp_path / "ds", {"Training": 5, "Validation": 3})
    splits = find_dataset(root)
    assert len(splits.test) == 0 and len(splits.val) == 6


def test_training_only_gets_a_validation_split(tmp_path):
    root = write_archive_layout(tmp_path / "ds", {"Training": 10})
    splits = find_dataset(root)
    assert len(splits.val) == 4 and len(splits.train) == 16
    assert any("held out 20%" in n for n in splits.notes)


@pytest.mark.parametrize("with_splits", [True, False])
def test_class_subfolders(tmp_path, with_splits):
    root = write_class_folders(tmp_path / "ds", splits=with_splits, n=10)
    splits = find_dataset(root)
    assert "class subfolders" in splits.layout
    if with_splits:
        assert splits.counts()["val"] == {"smoking": 10, "not_smoking": 10}
    else:
        total = sum(sum(v.values()) for v in splits.counts().values())
        assert total == 20


def test_class_subfolders_notsmoking_spelling_and_case(tmp_path):
    for name, label in (("Smoking", 1), ("NotSmoking", 0)):
        (tmp_path / name).mkdir()
        for i in range(5):
            synthetic_image(label, i).save(tmp_path / name / f"{i}.jpg")
    splits = find_dataset(tmp_path)
    everything = splits.get("all")
    assert sorted(s.label for s in everything) == [0] * 5 + [1] * 5


def test_flat_folder_split_is_deterministic_stratified_and_disjoint(tmp_path):
    root = write_flat(tmp_path / "flat", n_per_class=25)
    a, b = find_dataset(root, seed=1), find_dataset(root, seed=1)
    assert [s.path for s in a.train] == [s.path for s in b.train]
    assert a.counts() == {
        "train": {"smoking": 16, "not_smoking": 16},
        "val": {"smoking": 4, "not_smoking": 4},
        "test": {"smoking": 5, "not_smoking": 5},
    }
    paths = [s.path for split in ("train", "val", "test") for s in a.get(split)]
    assert len(paths) == len(set(paths)) == 50
    c = find_dataset(root, seed=2)
    assert [s.path for s in c.test] != [s.path for s in a.test]


def test_examples_folder_is_a_flat_dataset():
    splits = find_dataset(EXAMPLES)
    assert sum(sum(v.values()) for v in splits.counts().values()) == 12
    assert all(len(splits.get(k)) >= 2 for k in ("train", "val", "test"))


def test_unknown_layout_error_says_what_was_found_and_what_is_accepted(tmp_path):
    for i in range(3):
        synthetic_image(0, i).save(tmp_path / f"photo{i}.jpg")
    with pytest.raises(DatasetLayoutError) as e:
        find_dataset(tmp_path)
    assert "found 3 images, 0 with a class prefix" in e.value.message
    assert "smoking_" in e.value.hint and "not_smoking/" in e.value.hint


def test_missing_folder_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="dataset folder not found"):
        find_dataset(tmp_path / "nope")


# -- image loading ---------------------------------------------------------------------------


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode",
    ["L", "P", "LA", "RGBA", "CMYK", "1", "I", "F"],
)
def test_every_mode_becomes_rgb(tmp_path, mode):
    im = synthetic_image(1, 0).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode in ("I", "F") else "PNG"
    path = _save(im, tmp_path / f"x.{fmt.lower()}", format=fmt)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (32, 32)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    im = Image.new("I;16", (8, 8), 65535 // 2)
    path = _save(im, tmp_path / "deep.png")
    px = load_image(path).getpixel((0, 0))
    assert 120 <= px[0] <= 135  # mid-grey, not saturated white


def test_transparent_png_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(_save(im, tmp_path / "t.png")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(im, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


def test_a_photo_keeps_its_own_upright_size_when_decoded_at_reduced_scale(tmp_path):
    im = synthetic_image(1, 2, size=640).crop((0, 0, 640, 480))
    exif = im.getexif()
    exif[0x0112] = 6
    path = _save(im, tmp_path / "rot.jpg", exif=exif.tobytes())
    photo = load_photo(path, draft_size=100)
    assert photo.image.size == (120, 160)  # decoded at 1/4 scale, then turned upright
    assert (photo.width, photo.height) == (480, 640)
    flat = load_photo(_save(im, tmp_path / "flat.jpg").read_bytes(), draft_size=100)
    assert flat.image.size == (160, 120) and (flat.width, flat.height) == (640, 480)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"<html><body>not a photo</body></html>", "not an image"),
        (os.urandom(2048), "not an image"),
    ],
)
def test_non_images_raise_image_load_error(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason):
        load_image(path)


def test_truncated_jpeg_raises_image_load_error(tmp_path):
    buf = io.BytesIO()
    synthetic_image(1, 3, size=128).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path / "d.jpg")


def test_pixel_limit_rejects_before_decoding(tmp_path):
    path = _save(Image.new("L", (300, 300)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="too large: 300x300"):
        load_image(path, max_pixels=300 * 300 - 1)
    assert MAX_IMAGE_PIXELS >= 4000 * 4000


def test_transforms_use_the_config_and_keep_aspect_ratio():
    cfg = DataConfig(input_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    wide = Image.new("RGB", (60, 20), (255, 255, 255))
    x = preprocess(wide, cfg)
    assert tuple(x.shape) == (3, 24, 24)
    # letterbox: the padded rows are the mean colour, which normalises to ~0
    assert abs(float(x[:, 0, :].mean())) < 0.05
    assert float(x[:, 12, :].mean()) > 0.9
    y = train_transform(cfg)(wide)
    assert tuple(y.shape) == (3, 24, 24)
