"""Faces in a photo: MediaPipe's BlazeFace detector on ONNX Runtime (numpy + PIL, no torch).

The detector ships inside the package (``smokerdet/assets/faces/``, Apache-2.0, Google; see
NOTICE.md there), made by ``scripts/convert_face_detector.py`` from the
``@mediapipe/face_detection`` npm package and checked by its SHA-256 before it is loaded, so it
needs no download. Its ``metadata_props`` carry the decoder settings (input size, anchor
strides). Boxes are in the photo's own pixels, clipped to the photo; at most
:data:`MAX_FACES` per photo, the most confident first. Why this detector (against the
full-range BlazeFace and MTCNN) is in docs/model-card.md.

Example:
    >>> from smokerdet.data.images import load_image
    >>> from smokerdet.inference.faces import FaceDetector
    >>> faces = FaceDetector().detect(load_image("examples/smoking_0001.jpg"))
    >>> len(faces) >= 1 and all(0 <= f.x0 < f.x1 <= 250 for f in faces)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smokerdet._io import sha256_file
from smokerdet.errors import CheckpointError
from smokerdet.paths import face_detector_file

if TYPE_CHECKING:
    from PIL import Image

#: Minimum face score (after the sigmoid) for a detection to be kept.
SCORE_THRESHOLD = 0.5
#: Boxes overlapping a higher-scoring box by more than this IoU are dropped.
NMS_IOU_THRESHOLD = 0.3
#: Also drop a box when this share of the smaller box lies inside a better one.
NMS_CONTAINMENT_THRESHOLD = 0.7
#: Photos whose long side is at least this many times the short side are also
#: searched in overlapping square tiles, so that faces stay large enough for the
#: short-range network (it needs a face of about 1/10 of its input or more).
TILE_ASPECT = 1.5
#: At most this many tiles per photo (besides the whole-photo pass).
MAX_TILES = 8
#: At most this many faces are returned, highest score first.
MAX_FACES = 30
#: Photos whose shorter side is below this many pixels hold no detectable face.
MIN_IMAGE_SIDE = 8
#: Raw logits are clipped to +-this before the sigmoid, as MediaPipe does.
_SCORE_CLIP = 100.0

#: SHA-256 of the shipped model file, written byte for byte by scripts/convert_face_detector.py.
SHIPPED_MODEL_SHA256 = "a1c81351e9fb632f46bc4a84bd2a2b1969e3645061178bf798876f42c52a907c"
#: The metadata keys a model file must carry.
REQUIRED_METADATA = ("source", "sha256", "licence", "input_size", "strides", "anchors_per_cell")


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        x0: Left edge, in the photo's pixels (``0 <= x0 <= x1 <= width``).
        y0: Top edge, in the photo's pixels (``0 <= y0 <= y1 <= height``).
        x1: Right edge.
        y1: Bottom edge.
        score: Face probability in ``[SCORE_THRESHOLD, 1]``.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return self.y1 - self.y0


def make_anchors(input_size: int, strides: list[int], anchors_per_cell: list[int]) -> np.ndarray:
    """Build the SSD anchor centres the way MediaPipe's ``SsdAnchorsCalculator`` does.

    Consecutive layers with the same stride share one grid; with a fixed anchor
    size every anchor is 1x1 (in units of the input), so only centres matter.

    Args:
        input_size: Network input side in pixels.
        strides: Stride of each output layer, e.g. ``[8, 16, 16, 16]``.
        anchors_per_cell: Anchors per grid cell for each distinct stride, in order.

    Returns:
        ``(A, 2)`` float32 array of ``(x_center, y_center)`` in ``[0, 1]``.
    """
    distinct: list[int] = []
    for stride in strides:
        if not distinct or distinct[-1] != stride:
            distinct.append(stride)
    if len(distinct) != len(anchors_per_cell):
        raise ValueError("strides and anchors_per_cell do not match")
    centres = []
    for stride, per_cell in zip(distinct, anchors_per_cell, strict=True):
        side = int(np.ceil(input_size / stride))
        grid = (np.arange(side, dtype=np.float32) + 0.5) / side
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    limit: int,
    containment_threshold: float = 1.0,
) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: ``(N, 4)`` boxes as ``x0, y0, x1, y1``.
        scores: ``(N,)`` scores.
        iou_threshold: Drop a box whose IoU with a kept box exceeds this.
        limit: Keep at most this many boxes.
        containment_threshold: Also drop a box when more than this share of the smaller
            of the two boxes lies inside the other (catches a half face seen at a
            tile's edge). ``1.0`` turns the test off.

    Returns:
        Indices of the kept boxes, highest score first.
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        ix0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        iy0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        ix1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        iy1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        smaller = np.minimum(areas[best], areas[rest])
        contained = np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
        order = rest[(iou <= iou_threshold) & (contained <= containment_threshold)]
    return np.asarray(keep, dtype=np.int64)


def tile_regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Regions of a photo to search: the whole photo, plus square tiles if it is long.

    The tiles have the photo's short side and overlap by half, so any face
    smaller than half the short side lies wholly inside one of them.

    Args:
        width: Photo width in pixels.
        height: Photo height in pixels.

    Returns:
        ``(x0, y0, x1, y1)`` regions, the whole photo first.
    """
    regions = [(0, 0, width, height)]
    short, long_ = min(width, height), max(width, height)
    if long_ < TILE_ASPECT * short:
        return regions
    count = min(MAX_TILES, int(np.ceil((long_ - short) / (short / 2))) + 1)
    for start in np.linspace(0, long_ - short, count):
        s = int(round(start))
        regions.append((s, 0, s + short, height) if width > height else (0, s, width, s + short))
    return regions


class FaceDetector:
    """BlazeFace face detector running on ONNX Runtime (one thread: callers run many at once).

    Args:
        path: the ``.onnx`` file written by ``scripts/convert_face_detector.py``; default: the
            one shipped in the package.
        expected_sha256: the file's required SHA-256; default: the shipped model's. ``None``
            accepts any file that carries the detector's metadata.
        score_threshold: minimum face score to keep.
        max_faces: cap on the number of faces returned.

    Raises:
        CheckpointError: the file is missing, unreadable, tampered (hash), lacks the metadata,
            or its inputs and outputs are not BlazeFace's. The message names the file.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        expected_sha256: str | None = SHIPPED_MODEL_SHA256,
        score_threshold: float = SCORE_THRESHOLD,
        max_faces: int = MAX_FACES,
    ) -> None:
        import onnxruntime as ort

        path = Path(path) if path is not None else face_detector_file()
        self.path = path
        self._session = _open_session(ort, path, expected_sha256)
        meta = self._session.get_modelmeta().custom_metadata_map
        missing = [key for key in REQUIRED_METADATA if key not in meta]
        if missing:
            raise _bad(path, f"its metadata lacks {', '.join(missing)}")
        self.metadata: dict[str, str] = dict(meta)
        try:
            self.input_size = int(meta["input_size"])
            strides = [int(s) for s in meta["strides"].split(",")]
            per_cell = [int(s) for s in meta["anchors_per_cell"].split(",")]
            self._anchors = make_anchors(self.input_size, strides, per_cell)
        except ValueError as e:
            raise _bad(path, f"its decoder metadata is not valid ({e})") from None
        inputs = self._session.get_inputs()
        outputs = {o.name for o in self._session.get_outputs()}
        if (
            len(inputs) != 1
            or list(inputs[0].shape) != [1, 3, self.input_size, self.input_size]
            or outputs != {"regressors", "scores"}
        ):
            raise _bad(path, "its inputs and outputs are not BlazeFace's")
        self._input_name = inputs[0].name
        self.score_threshold = float(score_threshold)
        self.max_faces = int(max_faces)

    def _letterbox(self, image: Image.Image) -> tuple[np.ndarray, float, float, int, int]:
        """Shrink the photo into the square network input, centred on black.

        Args:
            image: An RGB photo.

        Returns:
            The ``(1, 3, S, S)`` float32 input in ``[-1, 1]``, the horizontal and
            vertical scales from photo pixels to input pixels, and the left and
            top padding in input pixels.
        """
        width, height = image.size
        side = self.input_size
        scale = side / max(width, height)
        new_w = min(side, max(1, round(width * scale)))
        new_h = min(side, max(1, round(height * scale)))
        # reducing_gap: huge photos are first reduced by an integer factor (cheap),
        # then resampled with antialiasing, so an 8000x8000 photo costs little.
        from PIL import Image

        small = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        canvas = np.zeros((side, side, 3), dtype=np.float32)
        off_x = (side - new_w) // 2
        off_y = (side - new_h) // 2
        canvas[off_y : off_y + new_h, off_x : off_x + new_w] = np.asarray(small, dtype=np.float32)
        # Black padding becomes -1, as in MediaPipe's letterbox.
        tensor = (canvas / 127.5 - 1.0).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(tensor), new_w / width, new_h / height, off_x, off_y

    def _detect_region(
        self, image: Image.Image, region: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run the network once on one region of the photo.

        Args:
            image: The RGB photo.
            region: ``(x0, y0, x1, y1)`` of the region, in photo pixels.

        Returns:
            ``(N, 4)`` boxes in photo pixels (not yet clipped) and ``(N,)`` scores
            of the anchors that pass the score threshold.
        """
        x0, y0, x1, y1 = region
        if (x0, y0, x1, y1) != (0, 0, image.width, image.height):
            image = image.crop(region)
        tensor, scale_x, scale_y, off_x, off_y = self._letterbox(image)
        side = self.input_size
        raw_boxes, raw_scores = self._session.run(
            ["regressors", "scores"], {self._input_name: tensor}
        )
        logits = np.clip(raw_scores[0, :, 0], -_SCORE_CLIP, _SCORE_CLIP)
        scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        hit = scores >= self.score_threshold
        reg = raw_boxes[0, hit, :4].astype(np.float64) / side
        anchors = self._anchors[hit]
        cx = anchors[:, 0] + reg[:, 0]
        cy = anchors[:, 1] + reg[:, 1]
        half_w = reg[:, 2] / 2
        half_h = reg[:, 3] / 2
        # Normalised square coordinates -> input pixels -> photo pixels.
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1) * side
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - off_x) / scale_x + x0
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - off_y) / scale_y + y0
        return boxes.reshape(-1, 4), scores[hit]

    def detect(self, image: Image.Image) -> list[Face]:
        """Find faces in a photo.

        Args:
            image: Any PIL image; modes other than RGB are converted. Any size:
                tiny photos give no face, huge ones are shrunk first.

        Returns:
            Faces, highest score first, at most ``max_faces``, with boxes in the
            photo's own pixel coordinates, clipped to the photo.
        """
        width, height = image.size
        if min(width, height) < MIN_IMAGE_SIDE:
            return []
        if image.mode != "RGB":
            image = image.convert("RGB")
        found = [self._detect_region(image, region) for region in tile_regions(width, height)]
        boxes = np.concatenate([f[0] for f in found])
        kept_scores = np.concatenate([f[1] for f in found])
        if not len(boxes):
            return []
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0.0, float(width))
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0.0, float(height))
        valid = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
        boxes, kept_scores = boxes[valid], kept_scores[valid]
        keep = nms(boxes, kept_scores, NMS_IOU_THRESHOLD, self.max_faces, NMS_CONTAINMENT_THRESHOLD)
        return [
            Face(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s))
            for b, s in zip(boxes[keep], kept_scores[keep], strict=True)
        ]


def _bad(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"face detector {path}: {why}",
        hint="reinstall smokerdet (`pip install --force-reinstall smokerdet`), or use "
        "--regions off to score whole photos only",
    )


def _open_session(ort: Any, path: Path, expected_sha256: str | None) -> Any:
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise _bad(path, f"cannot read it ({e.strerror or e})") from None
    if expected_sha256 is not None and actual != expected_sha256:
        raise _bad(path, f"SHA-256 {actual[:12]}... is not the shipped {expected_sha256[:12]}...")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for every kind of bad file
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise _bad(path, f"not a loadable ONNX model ({reason})") from None
