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
    >>> from smokerdet.data.layout import label_from_name
    >>> label_from_name("smoking_0001.jpg"), label_from_name("notsmoking_0001.jpg")
    (1, 0)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smokerdet.data.folds import check_per_class, class_counts, stratified_split
from smokerdet.errors import DatasetLayoutError, DatasetNotFoundError
from smokerdet.paths import default_dataset_dir

log = logging.getLogger("smokerdet")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
CLASS_NAMES = ("not_smoking", "smoking")

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


def _carve_validation(
    train: Sequence[Sample], seed: int, need_val: bool, after_test: bool
) -> tuple[list[Sample], list[Sample], str]:
    """Hold out a seeded, stratified validation split from ``train``: (train, val, note).

    Raises:
        DatasetLayoutError: ``need_val`` and a class has too few photos to leave
            ``MIN_VAL_PER_CLASS`` for validation and ``MIN_TRAIN_PER_CLASS`` for training.
    """
    needed = MIN_VAL_PER_CLASS + MIN_TRAIN_PER_CLASS
    if need_val:
        check_per_class(
            train,
            needed,
            purpose="to hold out a validation split",
            photos="training photos" + (" after the test split is held out" if after_test else ""),
            why=f" ({MIN_VAL_PER_CLASS} to validate and pick the decision threshold, "
            f"{MIN_TRAIN_PER_CLASS} to train)",
            hint="add photos of the short class, or give a validation folder "
            "(val/ or Validation/) next to the training one",
        )
    counts = class_counts(train)
    if min(counts.values()) < needed:
        found = ", ".join(f"{n} {name}" for name, n in counts.items())
        rest, val = stratified_split(train, VAL_FRACTION, seed)
        return rest, val, f"too few photos for a full validation split ({found})"
    rest, val = stratified_split(train, VAL_FRACTION, seed, minimum=MIN_VAL_PER_CLASS)
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
    trainval, test = stratified_split(samples, TEST_FRACTION, seed)
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
