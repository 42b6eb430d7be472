"""Label photos: files, folders, glob patterns or a list of paths in, one Prediction per image out.

Example:
    >>> import smokerdet
    >>> for p in smokerdet.predict(["examples/"]):  # doctest: +SKIP
    ...     print(p.path, p.label, round(p.probability, 3))
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from smokerdet.data import CLASS_NAMES, is_image_file
from smokerdet.engine import Engine, open_engine
from smokerdet.errors import ConfigError
from smokerdet.familiarity import WARN_SHARE, Familiarity, load_for
from smokerdet.inference import score_paths

log = logging.getLogger("smokerdet")

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Prediction:
    """One image's result. ``label`` and ``probability`` are None when ``error`` says why."""

    path: str
    label: str | None
    probability: float | None
    threshold: float
    model: str
    error: str | None = None
    heatmap: str | None = None
    """The heatmap overlay PNG written for this image (only with ``heatmaps=``)."""
    heatmaps_asked: bool = field(default=False, repr=False, compare=False)
    familiar: bool | None = None
    """Whether the photo looks like the model's training photos (None: the model has no
    familiarity stats, or the photo has no score)."""
    familiarity: float | None = None
    """``cut / distance`` from the training photos: familiar from 1.0 up (see
    :mod:`smokerdet.familiarity`)."""

    def to_dict(self) -> dict[str, Any]:
        """The row as a dict; ``heatmap`` is in it only when heatmaps were asked for."""
        d = asdict(self)
        if not d.pop("heatmaps_asked"):
            d.pop("heatmap")
        return d


@dataclass
class Inputs:
    """Expanded inputs, in a stable order without duplicates.

    Attributes:
        items: (path, error) pairs; error is set for a path that does not exist.
        warnings: things worth saying that are not errors (a folder with no images).
    """

    items: list[tuple[str, str | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def _walk_images(folder: str, recursive: bool) -> list[str]:
    found: list[str] = []
    if recursive:
        # followlinks=False: a symlink loop cannot trap the walk.
        for dirpath, dirnames, filenames in os.walk(folder, onerror=lambda e: None):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and is_image_file(Path(name)):
                    found.append(os.path.join(dirpath, name))
    else:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        for name in names:
            full = os.path.join(folder, name)
            if not name.startswith(".") and is_image_file(Path(name)) and not os.path.isdir(full):
                found.append(full)
    return found


def expand_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    stdin: TextIO | None = None,
) -> Inputs:
    """Turn files, folders, glob patterns and ``-`` (paths on stdin) into a list of files.

    Folders are walked (recursively by default) for image extensions, case-insensitively.
    A file named explicitly is kept whatever its extension. Duplicates are dropped, keeping
    the first occurrence; a path that does not exist becomes an item with an error.
    """
    out = Inputs()
    seen: set[str] = set()

    def add(path: str, error: str | None = None) -> None:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.items.append((path, error))

    def expand(raw: str) -> None:
        if os.path.isdir(raw):
            images = _walk_images(raw, recursive)
            if not images:
                out.warnings.append(f"no images in folder {raw}")
            for p in images:
                add(p)
        elif os.path.lexists(raw):
            add(raw)
        elif _GLOB_CHARS & set(raw):
            matches = sorted(glob.glob(raw, recursive=True))
            if not matches:
                add(raw, "no files match this pattern")
            for m in matches:
                expand(m) if os.path.isdir(m) else add(m)
        else:
            add(raw, "no such file or directory")

    for item in inputs:
        raw = os.fspath(item)
        if raw == "-":
            for line in stdin or sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    expand(line)
        else:
            expand(raw)
    return out


def check_heatmap_dir(heatmaps: str | os.PathLike[str]) -> Path:
    """The ``--heatmaps`` folder, checked writable before any image is read."""
    folder = Path(heatmaps).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"--heatmaps {folder}: no such folder", hint="create it first, or pick another"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".smokerdet-", suffix=".tmp"):
            pass
    except OSError as e:
        raise ConfigError(
            f"--heatmaps {folder} is not writable ({e.strerror or e})",
            hint="pick a folder you can write to",
        ) from None
    return folder


def predict(
    inputs: Iterable[str | os.PathLike[str]] | Inputs,
    *,
    model: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    recursive: bool = True,
    backend: str = "auto",
    heatmaps: str | os.PathLike[str] | None = None,
) -> Iterator[Prediction]:
    """Yield a :class:`Prediction` for every image in ``inputs``, in input order.

    Images stream in batches, so memory stays bounded however many paths are given. A file
    that can't be read yields a Prediction with ``error`` set; nothing stops the run. With an
    ONNX model (the shipped one, or any model exported by ``smokerdet export``) on the CPU,
    neither torch nor timm is imported.

    When the model folder holds familiarity stats (:mod:`smokerdet.familiarity`), each
    Prediction also says whether the photo looks like the model's training photos
    (``familiar``, ``familiarity``), from the same forward pass; when more than
    :data:`~smokerdet.familiarity.WARN_SHARE` of the run's photos do not, one warning goes to
    the ``smokerdet`` logger once the last row is out. Without stats both are None (one note).

    Args:
        inputs: files, folders, glob patterns, ``-`` for stdin, or :func:`expand_inputs` output.
        model: a model name, folder, ``.onnx`` file, ``latest`` or ``default``; by default the
            latest trained model, else the one shipped in the package.
        threshold: probability from which an image is labelled smoking; defaults to the
            threshold stored in the model (chosen on validation data).
        batch_size: images per forward pass (default: 8 with ONNX, 4 with torch).
        workers: with ONNX, decoding threads (default: one per core, at most 4); with torch on
            a CPU, worker processes that decode and score (0 scores in this process).
        device: auto, cpu, cuda or mps; ONNX runs on the CPU, a GPU means torch.
        recursive: walk folders recursively.
        backend: auto (ONNX when the model has an ONNX file), onnx or torch.
        heatmaps: a folder to write one heatmap overlay PNG per photo into; each
            Prediction's ``heatmap`` names its file.

    Raises:
        ModelNotFoundError, CheckpointError: no usable model (before any image is read).
        ConfigError: an option is out of range, or ``heatmaps`` is not a writable folder.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    heat_dir = check_heatmap_dir(heatmaps) if heatmaps is not None else None
    expanded = inputs if isinstance(inputs, Inputs) else expand_inputs(inputs, recursive=recursive)
    for warning in expanded.warnings:
        log.warning(warning)
    engine = open_engine(model, backend=backend, device=device)
    if heat_dir is not None and engine.backend == "onnx" and engine.head is None:  # type: ignore[attr-defined]
        raise ConfigError(
            f"--heatmaps: {engine.path} has no linear head for CAM heatmaps",
            hint="use --backend torch for heatmaps with this model (Grad-CAM)",
        )
    cut = engine.meta.threshold if threshold is None else threshold
    names = engine.meta.class_names or list(CLASS_NAMES)
    stats = load_for(engine)
    return _generate(expanded, engine, cut, names, batch_size, workers, heat_dir, stats)


def _generate(
    expanded: Inputs,
    engine: Engine,
    cut: float,
    names: list[str],
    batch_size: int | None,
    workers: int | None,
    heat_dir: Path | None,
    stats: Familiarity | None = None,
) -> Iterator[Prediction]:
    readable = [Path(p) for p, err in expanded.items if err is None]
    scores = score_paths(
        engine,
        readable,
        batch_size=batch_size,
        workers=workers,
        heatmaps=heat_dir,
        familiarity=stats,
    )
    asked = heat_dir is not None
    counts = [0, 0]  # photos with a familiarity score, and how many of them are unfamiliar
    for path, error in expanded.items:
        if error is not None:
            yield Prediction(path, None, None, cut, engine.name, error, None, asked)
            continue
        scored = next(scores)
        if scored.probability is None:
            yield Prediction(path, None, None, cut, engine.name, scored.error, None, asked)
        else:
            label = names[1] if scored.probability >= cut else names[0]
            heat = str(scored.heatmap) if scored.heatmap is not None else None
            fam = scored.familiarity
            familiar = None if fam is None else bool(fam >= 1.0)
            if fam is not None:
                counts[0] += 1
                counts[1] += not familiar
            yield Prediction(
                path, label, scored.probability, cut, engine.name, None, heat, asked, familiar, fam
            )
    warn_unfamiliar(*counts)


def warn_unfamiliar(scored: int, unfamiliar: int) -> None:
    """One warning when more than :data:`WARN_SHARE` of a run's photos look unfamiliar."""
    if scored and unfamiliar / scored > WARN_SHARE:
        log.warning(
            "%d of %d photos (%.0f%%) look unlike the photos this model was trained on "
            "(familiar: false); its answers on them are much less reliable than its measured "
            "accuracy. Adapt it to your photos: `smokerdet train --init default --data "
            "YOUR_PHOTOS` (a folder of labelled photos)",
            unfamiliar,
            scored,
            100 * unfamiliar / scored,
        )
