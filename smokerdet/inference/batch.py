"""Batch scoring: the one path from photos to scores behind predict, eval, serve and familiarity.

Every photo, a file or an upload, is decoded by :func:`smokerdet.data.images.load_photo`,
preprocessed by :func:`smokerdet.data.images.preprocess` and scored in batches by
:func:`score_decoded` through :meth:`Engine.run <smokerdet.inference.engine.Engine.run>`,
whatever the backend. So the same photo gets the same probability from ``predict``, ``eval``
and ``serve``, and the familiarity stats are fitted on the features scoring sees.

:func:`score_paths` spreads files over worker processes on a CPU: each decodes and scores its
own chunks with a single-threaded engine, onnxruntime or torch (forked with the model in
memory). A small convolutional network scales poorly across threads within one forward pass but
well across processes (``bench/engine.py`` and ``bench/predict.py`` measure both layouts;
docs/benchmarks.md has the figures). On a GPU, threads decode ahead and the model runs in this
process.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from smokerdet.data import MAX_IMAGE_PIXELS, load_photo, preprocess
from smokerdet.errors import ImageLoadError
from smokerdet.inference.heatmap import heatmap_name, write_overlay

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from smokerdet.data import DataConfig
    from smokerdet.inference.engine import Engine

#: Images per forward pass with torch. Small batches stay in the CPU's cache and measured
#: fastest there (bench/predict.py); pass a larger --batch-size on a GPU.
DEFAULT_BATCH_SIZE = 4

#: Images per onnxruntime run: batch 1 (2 with flip TTA) is as fast as any on a CPU, and
#: onnxruntime's arena grows with the batch (``bench/engine.py``; docs/benchmarks.md).
ONNX_BATCH_SIZE = 1

#: At most this many worker processes (or decoding threads) by default.
MAX_DEFAULT_WORKERS = 4

#: Below this many photos, ONNX scoring stays in this process: each worker opens its own
#: session (about a second), which would cost more than it saves. Torch workers are forked
#: with the model already in memory, so they pay off from the second batch.
MIN_PHOTOS_FOR_WORKERS = 32

#: Photos per task sent to a worker process.
WORKER_CHUNK = 8

#: Draws a photo's heatmap somewhere: (photo name, decoded photo, heat in [0, 1]) -> what the
#: row says (a file name, a data URL).
HeatmapSink = Callable[[str, "Image.Image", "np.ndarray"], str]


class FamiliarityScorer(Protocol):
    """What scoring needs of familiarity stats (:class:`~smokerdet.inference.familiarity.Familiarity`)."""

    def score(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Decoded:
    """One photo ready for the model, or why it is not."""

    name: str
    x: np.ndarray | None = None
    image: Image.Image | None = None
    """The decoded photo, kept only to draw its heatmap on."""
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Scored:
    """One photo's outcome: its probability of smoking, or why it has none.

    Attributes:
        index: its place among the photos scored.
        path: the file's path, or an upload's name.
        probability: None when ``error`` says why.
        heatmap: what the heatmap sink returned (a file name, a data URL).
        familiarity: ``cut / distance`` from the training photos (with familiarity stats).
        width: the photo's own width (full scale, upright); height likewise.
        sha256: the SHA-256 of its bytes (a file's only when it could be decoded).
        features: its pooled features ``(C,)`` (only when asked for).
    """

    index: int
    path: str
    probability: float | None
    error: str | None = None
    heatmap: str | None = None
    familiarity: float | None = None
    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    features: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Decoding: never raises for a bad photo


def _prepare(
    source: Path | bytes, name: str, cfg: DataConfig, keep: bool, max_pixels: int
) -> Decoded:
    try:
        photo = load_photo(source, max_pixels=max_pixels, draft_size=cfg.input_size, name=name)
        x = preprocess(photo.image, cfg)
    except ImageLoadError as e:
        return Decoded(name, error=e.reason)
    except Exception as e:  # a transform must not kill a 100,000-image batch either
        return Decoded(name, error=f"could not preprocess ({type(e).__name__}: {e})")
    image = photo.image if keep else None
    return Decoded(name, x, image, photo.width, photo.height, _sha256(source))


def _sha256(source: Path | bytes) -> str | None:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    try:
        with open(source, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:  # gone since it was decoded
        return None


def decode_file(path: Path, cfg: DataConfig, keep: bool = False) -> Decoded:
    """A file decoded and preprocessed for the model; ``keep`` keeps the decoded photo."""
    return _prepare(Path(path), str(path), cfg, keep, MAX_IMAGE_PIXELS)


def decode_image(
    name: str,
    image: Image.Image,
    cfg: DataConfig,
    keep: bool = False,
    size: tuple[int, int] | None = None,
) -> Decoded:
    """An already decoded upright RGB picture (a video frame) preprocessed for the model.

    Args:
        name: what the row and the heatmap's file name call it.
        image: the picture.
        cfg: the model's data config.
        keep: keep the picture (to draw its heatmap on).
        size: its own (width, height) when ``image`` was shrunk; default ``image.size``.
    """
    try:
        x = preprocess(image, cfg)
    except Exception as e:  # as _prepare: one bad frame must not stop a video
        return Decoded(name, error=f"could not preprocess ({type(e).__name__}: {e})")
    width, height = size or image.size
    return Decoded(name, x, image if keep else None, width, height)


def decode_upload(
    name: str,
    data: bytes,
    cfg: DataConfig,
    keep: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Decoded:
    """An upload's bytes decoded and preprocessed; it keeps its SHA-256 even when bad."""
    decoded = _prepare(data, name, cfg, keep, max_pixels)
    if decoded.error is None:
        return decoded
    return Decoded(name, sha256=_sha256(data), error=decoded.error)


# ---------------------------------------------------------------------------------------------
# Scoring decoded photos: the one batch scorer


def score_decoded(
    engine: Engine,
    items: Sequence[Decoded],
    *,
    start: int = 0,
    heatmap: HeatmapSink | None = None,
    familiarity: FamiliarityScorer | None = None,
    features: bool = False,
) -> list[Scored]:
    """Score decoded photos as one batch; a photo that failed to decode keeps its error.

    Args:
        engine: the model.
        items: the photos, from :func:`decode_file` or :func:`decode_upload` (with
            ``keep`` when there are heatmaps to draw).
        start: the index of the first item among all the photos scored.
        heatmap: draws each photo's heatmap; its answer goes in the row.
        familiarity: the model's familiarity stats, scored on the same forward pass.
        features: keep each photo's pooled features in its row.
    """
    import numpy as np

    xs = [d.x for d in items if d.x is not None]
    out = engine.run(np.stack(xs), maps=heatmap is not None) if xs else None
    fams = None if out is None or familiarity is None else familiarity.score(out.pooled)
    rows: list[Scored] = []
    j = 0  # the row of `out` that holds the next decoded photo
    for k, d in enumerate(items):
        row = Scored(
            start + k, d.name, None, d.error, width=d.width, height=d.height, sha256=d.sha256
        )
        if d.x is not None and out is not None:
            heat = None
            if heatmap is not None and out.maps is not None:
                assert d.image is not None, "decode with keep=True to draw heatmaps"
                heat = heatmap(d.name, d.image, engine.heatmap(out.maps[j], d.image.size))
            row = replace(
                row,
                probability=out.probabilities[j],
                heatmap=heat,
                familiarity=None if fams is None else float(fams[j]),
                features=out.pooled[j] if features else None,
            )
            j += 1
        rows.append(row)
    return rows


def write_heatmap(folder: Path, name: str, image: Image.Image, heat: np.ndarray) -> str:
    """The :data:`HeatmapSink` of ``predict --heatmaps``: an overlay PNG in ``folder``."""
    return str(write_overlay(folder / heatmap_name(name), image, heat))


# ---------------------------------------------------------------------------------------------
# Scoring files: in this process, in worker processes, or decoded in threads for a GPU


@dataclass(frozen=True)
class _Task:
    """What every batch of one run does besides scoring."""

    size: int
    heatmaps: Path | None = None
    familiarity: FamiliarityScorer | None = None
    features: bool = False

    def score(self, engine: Engine, paths: Sequence[Path], start: int) -> list[Scored]:
        """Decode and score ``paths`` here, batch by batch; the first is photo ``start``."""
        out: list[Scored] = []
        for i in range(0, len(paths), self.size):
            items = [self.decode(engine, p) for p in paths[i : i + self.size]]
            out.extend(self.score_items(engine, items, start + i))
        return out

    def decode(self, engine: Engine, path: Path) -> Decoded:
        return decode_file(path, engine.meta.data_config, keep=self.heatmaps is not None)

    def score_items(self, engine: Engine, items: Sequence[Decoded], start: int) -> list[Scored]:
        sink = partial(write_heatmap, self.heatmaps) if self.heatmaps is not None else None
        return score_decoded(
            engine,
            items,
            start=start,
            heatmap=sink,
            familiarity=self.familiarity,
            features=self.features,
        )


def default_workers(n_items: int, engine: Engine, batch_size: int) -> int:
    """Worker processes (threads on a GPU) for scoring ``n_items`` photos with ``engine``.

    On a CPU, one per core (at most :data:`MAX_DEFAULT_WORKERS`), none on one core or for
    fewer photos than make workers pay off (:data:`MIN_PHOTOS_FOR_WORKERS` with ONNX, more
    than one batch with torch). On a GPU, decoding threads: one core's worth fewer than the
    machine has.
    """
    cores = os.cpu_count() or 1
    if engine.device != "cpu":
        return max(1, min(MAX_DEFAULT_WORKERS, cores - 1)) if n_items > batch_size else 0
    least = MIN_PHOTOS_FOR_WORKERS if engine.backend == "onnx" else batch_size + 1
    if n_items < least or cores < 2:
        return 0
    return min(MAX_DEFAULT_WORKERS, cores)


def score_paths(
    engine: Engine,
    paths: Sequence[Path],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    heatmaps: Path | None = None,
    familiarity: FamiliarityScorer | None = None,
    features: bool = False,
) -> Iterator[Scored]:
    """Score ``paths`` in order through ``engine``; optionally write a heatmap per photo.

    Memory stays bounded by the workers, the batch size and the chunks in flight, however
    many paths. A file that cannot be read gives a :class:`Scored` with its ``error``.

    Args:
        engine: the model (:func:`smokerdet.inference.backend.open_engine`).
        paths: image files.
        batch_size: photos per forward pass (default: :data:`ONNX_BATCH_SIZE` for ONNX,
            else :data:`DEFAULT_BATCH_SIZE`).
        workers: worker processes on a CPU, decoding threads on a GPU (0: all in this
            process). Default: :func:`default_workers`.
        heatmaps: a folder to write ``<stem>-<hash>.heatmap.png`` overlays into.
        familiarity: the model's familiarity stats: each photo's score comes from the same
            forward pass as its probability (:mod:`smokerdet.inference.familiarity`).
        features: keep each photo's pooled features (``Scored.features``).
    """
    default = ONNX_BATCH_SIZE if engine.backend == "onnx" else DEFAULT_BATCH_SIZE
    task = _Task(batch_size or default, heatmaps, familiarity, features)
    n_workers = default_workers(len(paths), engine, task.size) if workers is None else workers
    if n_workers < 1:
        for i in range(0, len(paths), task.size):
            yield from task.score(engine, paths[i : i + task.size], i)
    elif engine.device == "cpu":
        yield from _score_in_workers(engine, paths, task, n_workers)
    else:
        yield from _score_decoding_in_threads(engine, paths, task, n_workers)


_worker: tuple[Engine, _Task] | None = None


def _init_worker(engine: Engine, task: _Task) -> None:
    global _worker
    _worker = (engine.in_worker(), task)


def _score_chunk(chunk: list[Path], start: int) -> list[Scored]:
    """A worker's task: score ``chunk``, photos ``start...`` of the run."""
    assert _worker is not None
    engine, task = _worker
    return task.score(engine, chunk, start)


def _score_in_workers(
    engine: Engine, paths: Sequence[Path], task: _Task, n_workers: int
) -> Iterator[Scored]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork on Linux: workers start in milliseconds with the model already in memory, and a
    # user's script needs no __main__ guard. Releasing the engine first stops this process's
    # onnxruntime threads, so that no lock is copied mid-use into the children.
    engine.release()
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(
        n_workers, mp_context=context, initializer=_init_worker, initargs=(engine, task)
    ) as pool:
        in_flight: deque[Future[list[Scored]]] = deque()
        for start in range(0, len(paths), WORKER_CHUNK):
            chunk = list(paths[start : start + WORKER_CHUNK])
            in_flight.append(pool.submit(_score_chunk, chunk, start))
            if len(in_flight) >= 2 * n_workers:
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()


def _score_decoding_in_threads(
    engine: Engine, paths: Sequence[Path], task: _Task, n_threads: int
) -> Iterator[Scored]:
    """Threads decode ahead (PIL and numpy release the GIL); the model runs here."""
    from concurrent.futures import ThreadPoolExecutor

    ahead = max(2 * n_threads, 2 * task.size)
    with ThreadPoolExecutor(n_threads) as pool:
        decoding: deque[Future[Decoded]] = deque()
        queued = 0
        for start in range(0, len(paths), task.size):
            while queued < len(paths) and len(decoding) < ahead:
                decoding.append(pool.submit(task.decode, engine, paths[queued]))
                queued += 1
            n = min(task.size, len(paths) - start)
            items = [decoding.popleft().result() for _ in range(n)]
            yield from task.score_items(engine, items, start)
