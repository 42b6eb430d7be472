"""Datasets on disk, robust image loading, and the transforms built from a model's data config.

Three layouts are understood, case-insensitively:

* split folders ``Training/``, ``Validation/``, ``Testing/`` (or ``train/``, ``val/``, ``test/``),
  possibly doubled as the public archive has them (``Training/Training/``);
* class subfolders ``smoking/`` plus ``not_smoking/`` or ``notsmoking/``, inside split folders
  or on their own;
* a flat folder of ``smoking_*`` / ``notsmoking_*`` files.

A folder without split folders gets a seeded, stratified split: 20% test, and 20% of the rest
(at least 2 photos of each class) for validation; split folders without a validation folder get
their validation split the same way. Too few photos for that is an error, not a silent run.

Example:
    >>> from smokerdet.data import label_from_name
    >>> label_from_name("smoking_0001.jpg"), label_from_name("notsmoking_0001.jpg")
    (1, 0)
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from smokerdet.errors import DatasetLayoutError, DatasetNotFoundError, ImageLoadError
from smokerdet.paths import default_dataset_dir

log = logging.getLogger("smokerdet")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
CLASS_NAMES = ("not_smoking", "smoking")
#: Largest image accepted, in pixels (a decompression-bomb guard): about 8000 x 8000.
MAX_IMAGE_PIXELS = 64_000_000

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_DIRS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_POSITIVE_DIRS = {"smoking", "smoker", "smokers"}
_NEGATIVE_DIRS = {"not_smoking", "notsmoking", "not-smoking", "nonsmoking", "non_smoking"}

ACCEPTED_LAYOUTS = (
    "split folders Training/ Validation/ Testing/ (or train/ val/ test/, possibly doubled "
    "as Training/Training/) holding smoking_*/notsmoking_* files or class subfolders; "
    "class subfolders smoking/ and not_smoking/ (or notsmoking/); "
    "or a flat folder of smoking_*.jpg and notsmoking_*.jpg files"
)


def is_image_file(path: Path) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def label_from_name(name: str) -> int | None:
    """Class from a file name prefix: 1 for ``smoking_``, 0 for ``notsmoking_``, else None.

    A prefix test, never a substring test: ``notsmoking_1.jpg`` contains "smoking" too.
    """
    lower = name.lower()
    if lower.startswith("smoking_"):
        return 1
    if lower.startswith(("notsmoking_", "not_smoking_", "not-smoking_")):
        return 0
    return None


@dataclass(frozen=True)
class Sample:
    """One labelled image file."""

    path: Path
    label: int


@dataclass
class DatasetSplits:
    """A dataset found on disk, split into train / val / test."""

    root: Path
    layout: str
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, split: str) -> list[Sample]:
        """Samples of one split, or of all splits for ``"all"``."""
        if split == "all":
            return [*self.train, *self.val, *self.test]
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        return list(getattr(self, split))

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split, how many images of each class."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            samples = self.get(split)
            pos = sum(s.label for s in samples)
            out[split] = {"smoking": pos, "not_smoking": len(samples) - pos}
        return out


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _image_files(folder: Path, recursive: bool = False) -> list[Path]:
    it: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    try:
        return sorted(
            p for p in it if not p.name.startswith(".") and is_image_file(p) and p.is_file()
        )
    except OSError:
        return []


def _unwrap(folder: Path) -> Path:
    """Descend through archive-style doubled folders (``Training/Training``)."""
    while True:
        subs = _subdirs(folder)
        if (
            len(subs) == 1
            and subs[0].name.lower() == folder.name.lower()
            and not _image_files(folder)
        ):
            folder = subs[0]
        else:
            return folder


def _class_dirs(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for sub in _subdirs(folder):
        name = sub.name.lower()
        if name in _POSITIVE_DIRS:
            found[1] = sub
        elif name in _NEGATIVE_DIRS:
            found[0] = sub
    return found


def _read_labelled(folder: Path) -> tuple[list[Sample], str, int]:
    """Samples in one split-or-root folder: (samples, layout kind, unlabelled file count)."""
    folder = _unwrap(folder)
    classes = _class_dirs(folder)
    if classes:
        samples = [
            Sample(p, label) for label, d in sorted(classes.items()) for p in _image_files(d, True)
        ]
        return sorted(samples, key=lambda s: str(s.path)), "class subfolders", 0
    samples, unlabelled = [], 0
    for p in _image_files(folder):
        label = label_from_name(p.name)
        if label is None:
            unlabelled += 1
        else:
            samples.append(Sample(p, label))
    return samples, "file-name prefixes", unlabelled


#: Validation photos of each class needed to pick a decision threshold, and training photos of
#: each class that must remain when the validation split is carved out of the training images.
MIN_VAL_PER_CLASS = 2
MIN_TRAIN_PER_CLASS = 2
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


def _stratified_split(
    samples: Sequence[Sample], fraction: float, seed: int, minimum: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split into (rest, held_out) with ``fraction`` of each class held out, deterministically.

    Each class holds out at least ``minimum`` photos (when it has them).
    """
    rest: list[Sample] = []
    held: list[Sample] = []
    for label in (0, 1):
        group = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        random.Random(f"{seed}-{label}").shuffle(group)
        n_held = max(round(len(group) * fraction), minimum)
        if n_held == 0 and len(group) >= 3:
            n_held = 1  # tiny folders still get every split
        held.extend(group[:n_held])
        rest.extend(group[n_held:])
    key: Callable[[Sample], str] = lambda s: str(s.path)  # noqa: E731
    return sorted(rest, key=key), sorted(held, key=key)


def _carve_validation(
    train: Sequence[Sample], seed: int, need_val: bool, after_test: bool
) -> tuple[list[Sample], list[Sample], str]:
    """Hold out a seeded, stratified validation split from ``train``: (train, val, note).

    Raises:
        DatasetLayoutError: ``need_val`` and a class has too few photos to leave
            ``MIN_VAL_PER_CLASS`` for validation and ``MIN_TRAIN_PER_CLASS`` for training.
    """
    per_class = {
        name: sum(s.label == label for s in train)
        for label, name in ((1, "smoking"), (0, "not_smoking"))
    }
    needed = MIN_VAL_PER_CLASS + MIN_TRAIN_PER_CLASS
    if min(per_class.values()) < needed:
        found = ", ".join(f"{n} {name}" for name, n in per_class.items())
        where = " after the test split is held out" if after_test else ""
        if need_val:
            raise DatasetLayoutError(
                f"too few photos to hold out a validation split: each class needs at least "
                f"{needed} training photos{where} ({MIN_VAL_PER_CLASS} to validate and pick "
                f"the decision threshold, {MIN_TRAIN_PER_CLASS} to train); found {found}",
                hint="add photos of the short class, or give a validation folder "
                "(val/ or Validation/) next to the training one",
            )
        rest, val = _stratified_split(train, VAL_FRACTION, seed)
        return rest, val, f"too few photos for a full validation split ({found})"
    rest, val = _stratified_split(train, VAL_FRACTION, seed, minimum=MIN_VAL_PER_CLASS)
    n_pos = sum(s.label for s in val)
    note = (
        f"held out 20% of the training images for validation: {n_pos}+{len(val) - n_pos} "
        f"photos (seeded, stratified, seed {seed})"
    )
    return rest, val, note


def find_dataset(
    root: str | os.PathLike[str], seed: int = 42, *, need_val: bool = True
) -> DatasetSplits:
    """Find the labelled images under ``root`` and split them.

    A dataset without a validation split gets one carved out of its training images (seeded
    and stratified, at least ``MIN_VAL_PER_CLASS`` photos of each class), so that training
    can stop early and pick its decision threshold on photos it did not learn from.

    Args:
        root: a dataset folder in any of the accepted layouts (see the module docstring).
        seed: seed of the stratified splits carved for folders that lack split folders.
        need_val: refuse a dataset too small to carve a validation split from (training
            needs one; scoring a split that exists does not).

    Returns:
        The samples of each split, with the layout that was recognised.

    Raises:
        DatasetLayoutError: the folder is missing, empty, in a layout smokerdet does not know,
            or (with ``need_val``) has too few photos per class for a validation split.

    Example:
        >>> splits = find_dataset("examples")  # doctest: +SKIP
        >>> len(splits.train), splits.layout  # doctest: +SKIP
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetLayoutError(f"dataset folder not found: {root}", hint="check --data")
    if not root.is_dir():
        raise DatasetLayoutError(f"--data must be a folder, not a file: {root}")
    root = _unwrap(root)

    split_dirs: dict[str, Path] = {}
    for sub in _subdirs(root):
        split = _SPLIT_DIRS.get(sub.name.lower())
        if split and split not in split_dirs:
            split_dirs[split] = sub

    if split_dirs:
        out = DatasetSplits(root=root, layout="")
        kinds = set()
        for split, folder in split_dirs.items():
            samples, kind, _ = _read_labelled(folder)
            kinds.add(kind)
            setattr(out, split, samples)
        out.layout = f"split folders with {' and '.join(sorted(kinds))}"
        if not (out.train or out.val or out.test):
            raise DatasetLayoutError(
                f"found split folders in {root} but no labelled images inside them",
                hint=f"accepted layouts: {ACCEPTED_LAYOUTS}",
            )
        if out.train and not out.val:
            out.train, out.val, note = _carve_validation(out.train, seed, need_val, False)
            out.layout += ", validation carved from training"
            out.notes.append(f"no validation folder: {note}")
        return out

    samples, kind, unlabelled = _read_labelled(root)
    if not samples:
        n_images = len(_image_files(root, recursive=True))
        raise DatasetLayoutError(
            f"no labelled images in {root}: found {n_images} images, 0 with a class prefix "
            "or class folder",
            hint=f"accepted layouts: {ACCEPTED_LAYOUTS}",
        )
    if unlabelled:
        log.warning(
            "%d images in %s have no smoking_/notsmoking_ prefix: ignored", unlabelled, root
        )
    trainval, test = _stratified_split(samples, TEST_FRACTION, seed)
    train, val, note = _carve_validation(trainval, seed + 1, need_val, True)
    return DatasetSplits(
        root=root,
        layout=f"{kind}, no split folders, splits carved (seed {seed})",
        train=train,
        val=val,
        test=test,
        notes=[
            f"no split folders: seeded stratified split (seed {seed}), about 64% / 16% / 20%",
            note,
        ],
    )


def resolve_data_root(data: str | os.PathLike[str] | None) -> Path:
    """The ``--data`` folder, or the downloaded dataset when none is given."""
    if data is not None:
        return Path(data).expanduser()
    folder = default_dataset_dir()
    if not folder.exists():
        raise DatasetNotFoundError(
            "no dataset given and none downloaded",
            hint="run `smokerdet download` first, or pass --data DIR",
        )
    return folder


def fingerprint(samples: Sequence[Sample], root: Path | None = None) -> dict[str, Any]:
    """A content fingerprint of a list of files: their names, labels and SHA-256 hashes."""
    digest = hashlib.sha256()
    for s in sorted(samples, key=lambda s: str(s.path)):
        name = s.path.relative_to(root).as_posix() if root else s.path.name
        try:
            content = hashlib.sha256(s.path.read_bytes()).hexdigest()
        except OSError:
            content = "unreadable"
        digest.update(f"{name}\t{s.label}\t{content}\n".encode())
    return {"n_files": len(samples), "sha256": digest.hexdigest()}


# ---------------------------------------------------------------------------------------------
# Image loading


def load_image(
    path: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft_size: int | None = None,
) -> Any:
    """Open an image as an upright RGB ``PIL.Image``, or raise :class:`ImageLoadError`.

    The work is done by :func:`smokerdet.images.load_image` (torch-free, also takes bytes):
    EXIF orientation, every mode converted to RGB, first frame of an animation, images over
    ``max_pixels`` refused before decoding, a zero-byte file reported as "empty file".

    Example:
        >>> load_image("examples/smoking_0001.jpg").mode  # doctest: +SKIP
        'RGB'
    """
    from smokerdet import images

    return images.load_image(path, max_pixels=max_pixels, draft_size=draft_size)


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


def eval_transform(cfg: DataConfig) -> Callable[[Any], Any]:
    """Deterministic preprocessing for eval and predict: PIL RGB image -> normalised tensor."""
    from torchvision import transforms as T

    size = cfg.input_size
    if cfg.resize_mode == "letterbox":
        resize = [
            PadToSquare(cfg.fill),
            T.Resize((size, size), interpolation=_interp(cfg.interpolation)),
        ]
    elif cfg.resize_mode == "crop":
        resize = [
            T.Resize(math.floor(size / cfg.crop_pct), interpolation=_interp(cfg.interpolation)),
            T.CenterCrop(size),
        ]
    else:
        resize = [T.Resize((size, size), interpolation=_interp(cfg.interpolation))]
    return T.Compose([*resize, T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])


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


# ---------------------------------------------------------------------------------------------
# Datasets for the DataLoader (plain sequences: no torch import at module level)


@dataclass
class LoadReport:
    """What happened while reading a list of images."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def decode_all(
    samples: Sequence[Sample],
    *,
    max_side: int | None = None,
    threads: int | None = None,
    on_skip: Callable[[ImageLoadError], None] | None = None,
) -> tuple[list[tuple[Any, int]], LoadReport]:
    """Decode every image once, in threads; skip (and report) the ones that fail.

    Args:
        samples: the labelled files.
        max_side: shrink decoded images so their long side is at most this (memory bound).
        threads: decoding threads (PIL releases the GIL while decoding).
        on_skip: called with each failure, e.g. to print a one-line warning.
    """
    report = LoadReport()

    def one(sample: Sample) -> tuple[Any, int] | ImageLoadError:
        try:
            im = load_image(sample.path, draft_size=max_side)
        except ImageLoadError as e:
            return e
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side))
        return im, sample.label

    out: list[tuple[Any, int]] = []
    with ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1)) as pool:
        for result in pool.map(one, samples):
            if isinstance(result, ImageLoadError):
                report.skipped.append((str(result.path), result.reason))
                if on_skip:
                    on_skip(result)
            else:
                out.append(result)
    return out, report


class DecodedDataset:
    """Already-decoded (image, label) pairs, augmented on access. Yields (tensor, label)."""

    def __init__(self, items: Sequence[tuple[Any, int]], transform: Callable[[Any], Any]) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, float]:
        im, label = self.items[i]
        return self.transform(im), float(label)


class ImageFileDataset:
    """Image files decoded on access, for scoring. Never raises for a bad file.

    Each item is ``(index, tensor or None, error or None)``; pair it with
    :func:`collate_scored` so that a broken file becomes an error row, not a crash.
    """

    def __init__(
        self, paths: Sequence[Path], transform: Callable[[Any], Any], draft_size: int | None = None
    ) -> None:
        self.paths, self.transform, self.draft_size = paths, transform, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        try:
            im = load_image(self.paths[i], draft_size=self.draft_size)
            return i, self.transform(im), None
        except ImageLoadError as e:
            return i, None, e.reason
        except Exception as e:  # a transform must not kill a 100,000-image batch either
            return i, None, f"could not preprocess ({type(e).__name__}: {e})"


def collate_scored(
    batch: list[tuple[int, Any, str | None]],
) -> tuple[list[int], Any, list[tuple[int, str]]]:
    """Stack the good items of a batch; return (indices, tensor or None, [(index, error)])."""
    import torch

    good = [(i, t) for i, t, err in batch if err is None]
    bad = [(i, err) for i, _, err in batch if err is not None]
    tensor = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], tensor, bad
