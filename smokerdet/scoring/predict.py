"""Label photos: files, folders, glob patterns or a list of paths in, one Prediction per image out.

Video files give a row per sampled frame (or per event, with ``events``), and ``http(s)://``
URLs are fetched as snapshots (:mod:`smokerdet.scoring.inputs`).

Example:
    >>> import smokerdet
    >>> for p in smokerdet.predict(["examples/"]):  # doctest: +SKIP
    ...     print(p.path, p.label, round(p.probability, 3))
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from smokerdet import distributed
from smokerdet.data import CLASS_NAMES, is_image_file
from smokerdet.distributed import bounds
from smokerdet.errors import ConfigError
from smokerdet.inference import (
    WARN_SHARE,
    Prediction,
    load_for,
    open_engine,
    score_paths,
)
from smokerdet.scoring.inputs import (
    Scoring,
    check_snapshot_dir,
    input_kind,
    url_row,
    video_rows,
)
from smokerdet.scoring.shards import (
    PartHeader,
    ResultsWriter,
    Shard,
    blocks,
    merge_parts,
    open_results,
)
from smokerdet.scoring.urls import is_url
from smokerdet.scoring.video import DEFAULT_FPS, check_fps, is_video_path

if TYPE_CHECKING:
    from smokerdet.inference import Engine

log = logging.getLogger("smokerdet")

_GLOB_CHARS = set("*?[")


@dataclass
class Inputs:
    """Expanded inputs, in a stable order without duplicates.

    Attributes:
        items: (path, error) pairs; error is set for a path that does not exist. A path may
            be a photo, a video file or an ``http(s)://`` URL.
        warnings: things worth saying that are not errors (a folder with no images).
    """

    items: list[tuple[str, str | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def _wanted(name: str) -> bool:
    """Whether a folder walk picks a file: a photo or a video, by its extension."""
    return not name.startswith(".") and (is_image_file(Path(name)) or is_video_path(name))


def _walk_images(folder: str, recursive: bool) -> list[str]:
    found: list[str] = []
    if recursive:
        # followlinks=False: a symlink loop cannot trap the walk.
        for dirpath, dirnames, filenames in os.walk(folder, onerror=lambda e: None):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if _wanted(name):
                    found.append(os.path.join(dirpath, name))
    else:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        for name in names:
            full = os.path.join(folder, name)
            if _wanted(name) and not os.path.isdir(full):
                found.append(full)
    return found


def _stdin_paths(text: str) -> list[str]:
    """The paths read from stdin: NUL-separated when any NUL is there (``find -print0``,
    which keeps names with newlines whole), else one a line."""
    if "\0" in text:
        return [p for p in text.split("\0") if p]
    return [p for p in (line.rstrip("\r") for line in text.split("\n")) if p]


def expand_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    stdin: TextIO | None = None,
) -> Inputs:
    """Turn files, folders, glob patterns, URLs and ``-`` (paths on stdin, one a line, or
    NUL-separated as ``find -print0`` writes them) into a list of inputs.

    Folders are walked (recursively by default) for image and video extensions,
    case-insensitively. A file named explicitly is kept whatever its extension, and an
    ``http(s)://`` URL as it is. Duplicates are dropped, keeping the first occurrence; a path
    that does not exist becomes an item with an error.
    """
    out = Inputs()
    seen: set[str] = set()

    def add(path: str, error: str | None = None) -> None:
        key = path if is_url(path) else os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.items.append((path, error))

    def expand(raw: str) -> None:
        if is_url(raw):
            add(raw)
        elif os.path.isdir(raw):
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
            for path in _stdin_paths((stdin or sys.stdin).read()):
                expand(path)
        else:
            expand(raw)
    return out


def check_heatmap_dir(heatmaps: str | os.PathLike[str]) -> Path:
    """The ``--heatmaps`` folder, created when missing and checked writable before any image
    is read. Its parent must exist (as for ``eval --plots``): a typo then fails instead of
    building a tree of folders."""
    folder = Path(heatmaps).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--heatmaps {folder} is a file, not a folder")
    if not folder.exists():
        if not folder.parent.is_dir():
            raise ConfigError(
                f"--heatmaps {folder}: the folder {folder.parent} does not exist",
                hint="create it first, or give --heatmaps a folder inside an existing one",
            )
        try:
            folder.mkdir()
        except FileExistsError:
            pass  # made by a concurrent run meanwhile: the probe below checks it
        except OSError as e:
            raise ConfigError(
                f"--heatmaps {folder}: cannot create it ({e.strerror or e})",
                hint="give --heatmaps a folder you can write to",
            ) from None
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
    fps: float = DEFAULT_FPS,
    events: bool = False,
    snapshots: str | os.PathLike[str] | None = None,
) -> Iterator[Prediction]:
    """Yield a :class:`Prediction` for every image in ``inputs``, in input order.

    A video file yields a row per frame sampled at ``fps`` (with its ``frame`` and ``time``),
    or with ``events`` a row per smoking event (its ``start``, ``end``, ``peak_probability``
    and best frame; one row at the video's peak when it has none). An ``http(s)://`` URL is
    fetched as one photo (size cap, timeout, TLS verified, image content types only). A video
    or URL that cannot be read yields its error row, credentials redacted.

    Images stream in batches, so memory stays bounded however many paths are given. A file
    that can't be read yields a Prediction with ``error`` set; nothing stops the run. With an
    ONNX model (the shipped one, or any model exported by ``smokerdet export``) on the CPU,
    neither torch nor timm is imported.

    When the model folder holds familiarity stats (:mod:`smokerdet.familiarity`), each
    Prediction also says whether the photo looks like the model's training photos
    (``familiar``, ``familiarity``), from the same forward pass; when more than
    :data:`~smokerdet.inference.familiarity.WARN_SHARE` of the run's photos do not, one warning goes to
    the ``smokerdet`` logger once the last row is out. Without stats both are None (one note).

    Args:
        inputs: files, folders, glob patterns, ``-`` for stdin, or :func:`expand_inputs` output.
        model: a model name, folder, ``.onnx`` file, ``latest`` or ``default``; by default the
            model chosen with ``smokerdet models default``, else the one shipped in the package.
        threshold: probability from which an image is labelled smoking; defaults to the
            threshold stored in the model (chosen on validation data).
        batch_size: images per forward pass (default: 1 with ONNX, 4 with torch).
        workers: worker processes that decode and score (default: one per core, at most 4,
            from 32 photos up with ONNX; 0 scores in this process).
        device: auto, cpu, cuda or mps; ONNX runs on the CPU, a GPU means torch.
        recursive: walk folders recursively.
        backend: auto (ONNX when the model has an ONNX file), onnx or torch.
        heatmaps: a folder to write one heatmap overlay PNG per photo into; each
            Prediction's ``heatmap`` names its file.
        fps: video frames sampled a second (0: every frame).
        events: merge a video's frames into events, one row each.
        snapshots: with ``events``, a folder (created) to write each event's best frame into
            as a JPEG; without it no frame is stored anywhere.

    Raises:
        ModelNotFoundError, CheckpointError: no usable model (before any image is read).
        ConfigError: an option is out of range, or ``heatmaps`` is not a writable folder.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    check_fps(fps)
    heat_dir = check_heatmap_dir(heatmaps) if heatmaps is not None else None
    snap_dir = check_snapshot_dir(snapshots, events)
    expanded = inputs if isinstance(inputs, Inputs) else expand_inputs(inputs, recursive=recursive)
    for warning in expanded.warnings:
        log.warning(warning)
    engine = open_engine(model, backend=backend, device=device)
    if heat_dir is not None and not engine.has_maps:
        raise ConfigError(
            f"--heatmaps: {engine.path} has no linear head for CAM heatmaps",
            hint="use --backend torch for heatmaps with this model (Grad-CAM)",
        )
    cut = engine.meta.threshold if threshold is None else threshold
    names = engine.meta.class_names or list(CLASS_NAMES)
    stats = load_for(engine)
    scoring = Scoring(
        engine, cut, names, heat_dir, stats, batch_size, fps, events=events, snapshots=snap_dir
    )
    return _generate(expanded, scoring, workers)


def _generate(expanded: Inputs, s: Scoring, workers: int | None) -> Iterator[Prediction]:
    """Every input's rows, in input order: photos through :func:`score_paths` (workers and
    all), videos and URLs in this process (:mod:`smokerdet.scoring.inputs`)."""
    photos = [Path(p) for p, err in expanded.items if err is None and input_kind(p) == "photo"]
    scores = score_paths(
        s.engine,
        photos,
        batch_size=s.batch_size,
        workers=workers,
        heatmaps=s.heatmaps,
        familiarity=s.familiarity,
    )
    counts = [0, 0]  # photos with a familiarity score, and how many of them are unfamiliar
    for path, error in expanded.items:
        if error is not None:
            yield s.error_row(path, error)
            continue
        kind = input_kind(path)
        if kind == "photo":
            rows: Iterable[Prediction] = [s.row(next(scores), path)]
        elif kind == "video":
            rows = video_rows(path, s)
        else:
            rows = [url_row(path, s)]
        for p in rows:
            if p.familiar is not None:
                counts[0] += 1
                counts[1] += not p.familiar
            yield p
    warn_unfamiliar(*counts)


def warn_unfamiliar(scored: int, unfamiliar: int) -> None:
    """One warning when more than :data:`WARN_SHARE` of a run's photos look unfamiliar."""
    if scored and unfamiliar / scored > WARN_SHARE:
        log.warning(
            "%d of %d photos (%.0f%%) look unlike the photos this model was trained on "
            "(familiar: false); its answers on them are much less reliable than its measured "
            "accuracy. Adapt it to your photos: `smokerdet train --init default --data "
            "YOUR_PHOTOS` (YOUR_PHOTOS holding smoking/ and not_smoking/ subfolders, or "
            "smoking_*.jpg and notsmoking_*.jpg files; 16 or more photos)",
            unfamiliar,
            scored,
            100 * unfamiliar / scored,
        )


# ---------------------------------------------------------------------------------------------
# Scaling out: shards, torchrun ranks, resumable results files (see docs/scale.md)

#: Rows each rank scores per turn under torchrun; the main rank writes one round at a time.
SHARD_BLOCK = 64


@dataclass
class ShardRun:
    """A run over one shard of the inputs, possibly continuing a results file.

    Attributes:
        rows: this run's predictions in input order, each already in the results file when
            it is yielded; on ranks other than the main one it yields nothing but must still
            be consumed (it drives their share of the work).
        total: the shard's rows, those already done included.
        done: rows that were already in the results file (``--resume``).
        failed_before: how many of those were error rows.
    """

    rows: Iterator[Prediction]
    total: int
    done: int = 0
    failed_before: int = 0


#: Rows appended per write when the batch size is the engine's own.
FLUSH_ROWS = 16


def model_fingerprint(engine: Engine, threshold: float) -> dict[str, Any]:
    """What identifies the scoring of a results file: the model's name and weights, the
    backend (ONNX and torch agree closely, not bit for bit) and the threshold."""
    return {
        "name": engine.name,
        "weights_sha256": engine.meta.weights_sha256,
        "backend": engine.backend,
        "threshold": threshold,
    }


def predict_shard(
    expanded: Inputs,
    *,
    shard: Shard | None = None,
    output: Path | None = None,
    resume: bool = False,
    model: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> ShardRun:
    """Predict one shard of ``expanded``, spread over the torchrun ranks, into a results file.

    Shard ``I/N`` is the ``I``-th contiguous slice of the inputs (all of them by default).
    Under torchrun (inside :func:`smokerdet.distributed.session`) the ranks take turns at
    blocks of :data:`SHARD_BLOCK` inputs and the main rank receives the rows in input order.
    With ``output``, the main rank appends each batch of rows to that JSON Lines file (after a
    header naming the inputs, shard and model; see :mod:`smokerdet.shard`), and ``resume``
    continues a file a killed run left behind.

    Raises:
        ConfigError: bad options, or ``output`` exists without ``resume``.
        PartError: ``output`` belongs to other inputs, another shard or another model.
        ModelNotFoundError, CheckpointError: no usable model.
    """
    world = distributed.current()
    if shard is not None and world.distributed:
        raise ConfigError(
            "--shard splits the work between independent jobs; under torchrun every rank "
            "already takes its share",
            hint="drop --shard, or launch the shards without torchrun",
        )
    if resume and output is None:
        raise ConfigError("--resume needs --output FILE: the file to continue")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    shard = shard or Shard()
    engine = open_engine(
        model, backend=backend, device=device, threads=distributed.threads_per_rank()
    )
    cut = engine.meta.threshold if threshold is None else threshold
    names = engine.meta.class_names or list(CLASS_NAMES)
    if any(input_kind(p) != "photo" for p, _ in expanded.items):
        raise ConfigError(
            "videos and URLs are scored in a plain run, not with --shard, --output or torchrun",
            hint="give them to `smokerdet predict` without those options",
        )
    start, stop = bounds(len(expanded), shard.index, shard.count)
    mine = expanded.items[start:stop]
    writer: ResultsWriter | None = None
    done = failed = 0
    if output is not None:
        all_paths = [p for p, _ in expanded.items]
        header = PartHeader.create(all_paths, shard, model_fingerprint(engine, cut))
        opened: list[ResultsWriter] = []

        def _open() -> tuple[int, int]:
            w, d, f = open_results(output, header, [p for p, _ in mine], resume=resume)
            opened.append(w)
            return d, f

        done, failed = distributed.on_main(_open)
        writer = opened[0] if opened else None
    todo = Inputs(items=mine[done:])

    stats = load_for(engine)

    scoring = Scoring(engine, cut, names, None, stats, batch_size)

    def score(part: Inputs) -> Iterator[Prediction]:
        return _generate(part, scoring, workers)

    if world.distributed:
        # Small runs still use every rank: blocks of at most SHARD_BLOCK, one round at least.
        block = max(1, min(SHARD_BLOCK, -(-len(todo) // world.size)))
        rows, every = _in_turns(todo, score, world, block), block * world.size
    else:
        rows, every = score(todo), batch_size or FLUSH_ROWS
    return ShardRun(_written(rows, writer, every), total=len(mine), done=done, failed_before=failed)


def _in_turns(
    todo: Inputs,
    score: Callable[[Inputs], Iterator[Prediction]],
    world: distributed.World,
    block: int,
) -> Iterator[Prediction]:
    """Ranks score blocks in turns; the main rank yields every rank's rows in input order."""
    n = len(todo)
    spans = blocks(n, world.rank, world.size, block)
    scored = score(Inputs(items=[item for s, e in spans for item in todo.items[s:e]]))
    for k in range(-(-n // (block * world.size))):
        size = spans[k][1] - spans[k][0] if k < len(spans) else 0
        got = distributed.gather_to_main([next(scored) for _ in range(size)])
        for part in got or []:
            yield from part


def _written(
    rows: Iterator[Prediction], writer: ResultsWriter | None, every: int
) -> Iterator[Prediction]:
    """``rows``, each yielded once it is in the results file (appended ``every`` rows at a
    time); whatever was scored is written even when the run stops early."""
    if writer is None:
        yield from rows
        return
    pending: list[Prediction] = []
    try:
        for row in rows:
            pending.append(row)
            if len(pending) >= every:
                batch, pending = pending, []
                writer.append([p.json_line() for p in batch])
                yield from batch
        batch, pending = pending, []
        writer.append([p.json_line() for p in batch])
        yield from batch
    finally:
        writer.append([p.json_line() for p in pending])  # scored before a stop: keep them
        writer.close()


def merge_results(parts: Sequence[str | os.PathLike[str]]) -> tuple[int, Iterator[Prediction]]:
    """The number of predictions in results-file parts of one run (``--shard``), and the
    predictions, streamed in input order.

    Raises:
        ConfigError: no parts.
        PartError: parts of different inputs or models, missing or repeated shards, or an
            incomplete part.
    """
    merged = merge_parts([Path(p) for p in parts])
    rows = (json.loads(line) for line in merged)
    return merged.total, (Prediction.from_dict(r) for r in rows)
