"""The shipped face detector: real ONNX Runtime runs on synthetic photos and the examples."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from smokerdet.data.images import load_image
from smokerdet.errors import CheckpointError
from smokerdet.inference.faces import (
    MAX_FACES,
    MAX_TILES,
    TILE_ASPECT,
    Face,
    FaceDetector,
    make_anchors,
    nms,
    tile_regions,
)
from smokerdet.paths import face_detector_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MODEL = face_detector_file()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _inside(face: Face, size: tuple[int, int]) -> bool:
    width, height = size
    return 0.0 <= face.x0 < face.x1 <= width and 0.0 <= face.y0 < face.y1 <= height


def test_finds_the_face_in_an_example_photo(detector: FaceDetector) -> None:
    # examples/notsmoking_0002.jpg: one person, face in the upper middle of the 250 px photo
    (face,) = detector.detect(load_image(EXAMPLES / "notsmoking_0002.jpg"))
    assert face.score > 0.9
    assert 40 < face.x0 < face.x1 < 160 and 30 < face.y0 < face.y1 < 140


def test_boxes_follow_the_exif_rotation(detector: FaceDetector, tmp_path: Path) -> None:
    photo = Image.open(EXAMPLES / "notsmoking_0002.jpg")
    (upright,) = detector.detect(photo.convert("RGB"))
    # Stored rotated, with EXIF saying "rotate 90 CW to view" (orientation 6): load_image turns
    # it upright again, so the box is where it is in the upright photo.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "r.jpg", exif=exif, quality=95)
    (turned,) = detector.detect(load_image(tmp_path / "r.jpg"))
    assert turned.x0 == pytest.approx(upright.x0, abs=6)
    assert turned.y0 == pytest.approx(upright.y0, abs=6)


def test_a_face_cut_by_the_border_stays_inside_the_photo(detector: FaceDetector) -> None:
    photo = load_image(EXAMPLES / "notsmoking_0003.jpg").crop((60, 100, 250, 250))
    faces = detector.detect(photo)
    assert faces and all(_inside(f, photo.size) for f in faces)


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (128, 90, 60)])
def test_flat_image_has_no_face(detector: FaceDetector, colour: tuple[int, int, int]) -> None:
    assert detector.detect(Image.new("RGB", (300, 200), colour)) == []


def test_noise_and_gradient_have_no_face(detector: FaceDetector) -> None:
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    gradient = Image.fromarray(np.stack([ramp, ramp.T, 255 - ramp], axis=2))
    assert detector.detect(_noise(256, 256)) == []
    assert detector.detect(gradient) == []


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (1, 500), (500, 1), (7, 7)])
def test_tiny_or_thin_image_has_no_face(detector: FaceDetector, size: tuple[int, int]) -> None:
    assert detector.detect(Image.new("RGB", size, (200, 150, 120))) == []


@pytest.mark.parametrize("size", [(8, 8), (37, 500), (900, 60), (250, 250), (3000, 2000)])
def test_boxes_inside_photo_sorted_and_capped(size: tuple[int, int]) -> None:
    # A threshold of 0 turns every anchor into a detection: decoding, clipping, NMS and the
    # cap run on any photo shape, with no face needed.
    permissive = FaceDetector(score_threshold=0.0)
    faces = permissive.detect(_noise(*size, seed=size[0]))
    assert 0 < len(faces) <= MAX_FACES
    assert all(_inside(face, size) for face in faces)
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True)


def test_huge_image_is_handled(detector: FaceDetector) -> None:
    assert detector.detect(Image.new("RGB", (8000, 8000), (90, 120, 150))) == []


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_other_modes_are_converted(detector: FaceDetector, mode: str) -> None:
    assert detector.detect(Image.new(mode, (120, 90))) == []


def test_face_is_frozen() -> None:
    face = Face(1.0, 2.0, 3.0, 4.0, 0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.x0 = 0.0  # type: ignore[misc]
    assert face.width == 2.0 and face.height == 2.0


def test_tampered_detector_is_refused_naming_it(tmp_path: Path) -> None:
    data = bytearray(MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"face detector .*tampered\.onnx: SHA-256") as e:
        FaceDetector(tampered)
    assert "--regions off" in (e.value.hint or "")


def test_truncated_and_missing_detector_are_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(MODEL.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.onnx: SHA-256"):
        FaceDetector(truncated)
    with pytest.raises(CheckpointError, match="cut.onnx: not a loadable ONNX model"):
        FaceDetector(truncated, expected_sha256=None)
    with pytest.raises(CheckpointError, match="gone.onnx: cannot read it"):
        FaceDetector(tmp_path / "gone.onnx")


def test_detector_without_metadata_is_refused(tmp_path: Path) -> None:
    model = onnx.load(str(MODEL))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(CheckpointError, match="metadata lacks source"):
        FaceDetector(bare, expected_sha256=None)


def test_shipped_detector_names_its_source_and_licence(detector: FaceDetector) -> None:
    meta = detector.metadata
    assert meta["source"] == "npm:@mediapipe/face_detection@0.4.1657300184"
    assert meta["licence"] == "Apache-2.0"
    assert "Google" in meta["attribution"]
    assert MODEL.stat().st_size < 5 * 1024 * 1024
    assert (MODEL.parent / "LICENSE-APACHE-2.0.txt").is_file()


def test_anchor_counts() -> None:
    assert make_anchors(128, [8, 16, 16, 16], [2, 6]).shape == (896, 2)
    assert make_anchors(192, [4], [1]).shape == (2304, 2)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.6, 0.9, 0.7], dtype=np.float32)
    assert nms(boxes, scores, 0.3, 30).tolist() == [1, 2]
    assert nms(boxes, scores, 0.3, 1).tolist() == [1]


def test_nms_drops_a_box_inside_a_better_one() -> None:
    boxes = np.array([[0, 0, 100, 100], [0, 30, 40, 70]], dtype=np.float32)  # IoU 0.16
    scores = np.array([0.9, 0.8], dtype=np.float32)
    assert nms(boxes, scores, 0.3, 30).tolist() == [0, 1]
    assert nms(boxes, scores, 0.3, 30, containment_threshold=0.7).tolist() == [0]


@pytest.mark.parametrize("size", [(250, 250), (300, 199), (1100, 4000), (8000, 1000), (8, 3000)])
def test_tiles_cover_long_photos(size: tuple[int, int]) -> None:
    width, height = size
    regions = tile_regions(width, height)
    assert regions[0] == (0, 0, width, height)
    assert len(regions) <= 1 + MAX_TILES
    if max(size) < TILE_ASPECT * min(size):
        assert len(regions) == 1
        return
    short = min(size)
    for x0, y0, x1, y1 in regions[1:]:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0, y1 - y0) == (short, short)
    starts = sorted(r[0] if width > height else r[1] for r in regions[1:])
    assert starts[0] == 0 and starts[-1] == max(size) - short


def test_converter_refuses_an_unpinned_source(tmp_path: Path, capsys, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location(
        "convert_face_detector", ROOT / "scripts" / "convert_face_detector.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "convert_face_detector", script)  # dataclasses look it up
    spec.loader.exec_module(script)
    fake = tmp_path / "mediapipe-face_detection-0.4.1657300184.tgz"
    fake.write_bytes(b"tampered")
    assert script.main([str(fake), "--out", str(tmp_path / "o")]) == 2
    assert "is not the pinned" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
