"""Batched scoring of image files with a loaded model: the one code path behind eval and predict.

Because both commands score through :func:`score_files`, the same image gets the same
probability from ``smokerdet eval`` and ``smokerdet predict``.

:func:`score_paths` scores through an :class:`~smokerdet.inference.engine.Engine`. With ONNX Runtime,
threads decode and preprocess (PIL releases the GIL) while one session runs each batch with
one intra-op thread per core: the layout bench/engine.py measured fastest. A torch engine
without heatmaps goes through :func:`score_files`.

With torch on a CPU, the model runs *inside* the worker processes, one per core with one thread each:
a small convolutional network scales poorly across cores within one forward pass, but
perfectly across processes (bench/predict.py: 2 processes x 1 thread score ~1.5x as many
images per second as 1 process x 2 threads on the 2-core build machine). On a GPU, workers
only decode and the main process runs the model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet.data import ImageFileDataset, collate_scored, eval_transform, load_image, preprocess
from smokerdet.errors import ImageLoadError
from smokerdet.inference.heatmap import heatmap_name, write_overlay
from smokerdet.inference.torch_backend import forward_probs, forward_probs_features

if TYPE_CHECKING:
    from smokerdet.inference.engine import Engine
    from smokerdet.inference.familiarity import Familiarity
    from smokerdet.models import LoadedModel

#: Images per forward pass. Small batches stay in the CPU's cache and measured fastest there
#: (bench/predict.py); pass a larger --batch-size on a GPU.
DEFAULT_BATCH_SIZE = 4

#: Images per onnxruntime run. bench/engine.py: batch 1 (2 with flip TTA) is as fast as any
#: on a CPU, and onnxruntime's arena grows with the batch (peak RSS on 300 photos: 180 MB at
#: batch 1, 400 MB at 4, 680 MB at 8).
ONNX_BATCH_SIZE = 1

#: At most this many scoring processes by default: each holds its own activations.
MAX_DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class Scored:
    """One file's outcome: its probability of smoking, or why it has none."""

    index: int
    path: Path
    probability: float | None
    error: str | None
    heatmap: Path | None = None
    familiarity: float | None = None


def default_workers(n_items: int, batch_size: int, device: str = "cpu") -> int:
    """Worker processes for scoring ``n_items`` images.

    None for a single batch (starting workers would cost more than it saves). On a CPU, one
    per core (at most :data:`MAX_DEFAULT_WORKERS`): each decodes and scores its own batches.
    On a GPU, where workers only decode, one core's worth fewer than the machine has.
    """
    if n_items <= batch_size:
        return 0
    cores = os.cpu_count() or 1
    if device == "cpu":
        return max(1, min(MAX_DEFAULT_WORKERS, cores))
    return max(1, min(MAX_DEFAULT_WORKERS, cores - 1))


def _probs_and_familiarity(
    loaded: LoadedModel, batch: object, device: str, familiarity: Familiarity | None
) -> tuple[list[float], list[float] | None]:
    if familiarity is None:
        return forward_probs(loaded, batch, device), None
    probs, pooled = forward_probs_features(loaded, batch, device)
    return probs, familiarity.score(pooled).tolist()


class _CollateAndScore:
    """A ``collate_fn`` that also runs the model. DataLoader calls ``collate_fn`` inside the
    worker that produced the batch, so each CPU worker decodes *and* scores its batches."""

    def __init__(self, loaded: LoadedModel, familiarity: Familiarity | None = None) -> None:
        self.loaded, self.familiarity = loaded, familiarity

    def __call__(
        self, items: list[tuple[int, Any, str | None]]
    ) -> tuple[list[int], tuple[list[float], list[float] | None], list[tuple[int, str]]]:
        indices, tensor, failures = collate_scored(items)
        if tensor is None:
            return indices, ([], None), failures
        return (
            indices,
            _probs_and_familiarity(self.loaded, tensor, "cpu", self.familiarity),
            failures,
        )


def score_files(
    loaded: LoadedModel,
    paths: Sequence[Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "cpu",
    familiarity: Familiarity | None = None,
) -> Iterator[Scored]:
    """Score ``paths`` in order, streaming batches through a DataLoader.

    Memory stays bounded by the batch size, the worker count and the prefetch depth, whatever
    the number of paths. A file that cannot be read yields a :class:`Scored` with its
    ``error`` set.

    Args:
        loaded: the model, with its preprocessing and TTA.
        paths: image files.
        batch_size: images per forward pass.
        workers: worker processes; on a CPU each decodes and scores (0: all in this process,
            with all cores); on a GPU they decode. Default: :func:`default_workers`.
        device: where the model is (``cpu``, ``cuda``, ``mps``).
        familiarity: stats to give each photo a familiarity score from the same pass.
    """
    import torch
    from torch.utils.data import DataLoader

    if device == "cpu":
        loaded.model.to(memory_format=torch.channels_last)
    files = ImageFileDataset(
        paths, eval_transform(loaded.meta.data_config), loaded.meta.data_config.input_size
    )
    n_workers = default_workers(len(paths), batch_size, device) if workers is None else workers
    # DataLoader workers run torch with one thread each, which is also what makes scoring in
    # them safe: a forked child that starts an OpenMP pool after its parent used one hangs
    # (seen here with 2 threads); a single-threaded one never starts a pool.
    score_in_workers = device == "cpu" and n_workers > 0
    loader = DataLoader(
        files,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=n_workers,
        collate_fn=_CollateAndScore(loaded, familiarity) if score_in_workers else collate_scored,
        pin_memory=device == "cuda",
        prefetch_factor=(2 if score_in_workers else 4) if n_workers else None,
    )
    for indices, scored, failures in loader:
        if score_in_workers:
            probs, fams = scored
        elif scored is None:
            probs, fams = [], None
        else:
            probs, fams = _probs_and_familiarity(loaded, scored, device, familiarity)
        fams = fams or [None] * len(probs)
        outcome: dict[int, tuple[float | None, str | None, float | None]] = {
            i: (p, None, f) for i, p, f in zip(indices, probs, fams, strict=True)
        }
        outcome.update({i: (None, err, None) for i, err in failures})
        for i in sorted(outcome):
            prob, err, fam = outcome[i]
            yield Scored(index=i, path=paths[i], probability=prob, error=err, familiarity=fam)


def _prepare(path: Path, engine: Engine, keep: bool) -> tuple[Any, Any, str | None]:
    """(input array, decoded image if ``keep``, error): never raises for a bad file."""
    cfg = engine.meta.data_config
    try:
        im = load_image(path, draft_size=cfg.input_size)
        return preprocess(im, cfg), (im if keep else None), None
    except ImageLoadError as e:
        return None, None, e.reason
    except Exception as e:  # a transform must not kill a 100,000-image batch either
        return None, None, f"could not preprocess ({type(e).__name__}: {e})"


def _score_batch(
    engine: Engine,
    paths: Sequence[Path],
    start: int,
    prepared: list[tuple[Any, Any, str | None]],
    heatmaps: Path | None,
    familiarity: Familiarity | None = None,
) -> Iterator[Scored]:
    import numpy as np

    from smokerdet.inference.engine import normalise_cam, to_image_grid

    good = [k for k, (x, _, err) in enumerate(prepared) if err is None]
    maps: Any = None
    probs: list[float] = []
    fams: list[float | None] = [None] * len(good)
    if good:
        batch = np.stack([prepared[k][0] for k in good])
        if heatmaps is None and familiarity is None:
            probs = engine.score_arrays(batch)
        elif heatmaps is None:
            probs, pooled = engine.features_arrays(batch)
        else:
            probs, maps = engine.maps_arrays(batch)
            # heatmaps are the slow path: a second pass for the features costs little more
            pooled = engine.features_arrays(batch)[1] if familiarity is not None else None
        if familiarity is not None:
            fams = familiarity.score(pooled).tolist()
    outcome: dict[int, tuple[float | None, str | None, Path | None]] = {}
    for j, k in enumerate(good):
        target = None
        if maps is not None and heatmaps is not None:
            im = prepared[k][1]
            heat = to_image_grid(normalise_cam(maps[j]), im.size, engine.meta.data_config)
            target = write_overlay(heatmaps / heatmap_name(paths[start + k]), im, heat)
        outcome[k] = (probs[j], None, target)
    for k, (_, _, err) in enumerate(prepared):
        if err is not None:
            outcome[k] = (None, err, None)
    fam_of = dict(zip(good, fams, strict=True))
    for k in range(len(prepared)):
        prob, err, target = outcome[k]
        yield Scored(start + k, paths[start + k], prob, err, target, fam_of.get(k))


#: Below this many photos, ONNX scoring stays in this process: starting workers (about a
#: second each) would cost more than it saves.
MIN_PHOTOS_FOR_WORKERS = 32

#: Photos per task sent to an ONNX worker process.
WORKER_CHUNK = 8

_worker_engine: Engine | None = None
_worker_familiarity: Familiarity | None = None


def _init_worker(path: Path, name: str, familiarity: Familiarity | None = None) -> None:
    from smokerdet.inference.onnx_backend import OnnxEngine

    global _worker_engine, _worker_familiarity
    # one thread per process: processes scale across cores, intra-op threads don't (bench)
    _worker_engine = OnnxEngine(path, name, threads=1)
    _worker_familiarity = familiarity


def _score_chunk(
    engine: Engine | None,
    paths: Sequence[Path],
    start: int,
    stop: int,
    batch_size: int,
    heatmaps: Path | None,
    familiarity: Familiarity | None = None,
) -> list[Scored]:
    """Decode and score ``paths[start:stop]`` here, batch by batch (also a worker's task)."""
    if engine is None:
        engine, familiarity = _worker_engine, _worker_familiarity
    assert engine is not None
    out: list[Scored] = []
    for i in range(start, stop, batch_size):
        chunk = range(i, min(i + batch_size, stop))
        prepared = [_prepare(paths[k], engine, heatmaps is not None) for k in chunk]
        out.extend(_score_batch(engine, paths, i, prepared, heatmaps, familiarity))
    return out


def onnx_workers(n_items: int) -> int:
    """Worker processes for ONNX scoring: one per core (at most 4), none for a few photos."""
    cores = os.cpu_count() or 1
    if n_items < MIN_PHOTOS_FOR_WORKERS or cores < 2:
        return 0
    return min(MAX_DEFAULT_WORKERS, cores)


def score_paths(
    engine: Engine,
    paths: Sequence[Path],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    heatmaps: Path | None = None,
    familiarity: Familiarity | None = None,
) -> Iterator[Scored]:
    """Score ``paths`` in order through ``engine``; optionally write a heatmap per image.

    With ONNX, each worker process holds a one-thread onnxruntime session and decodes and
    scores its own chunks of photos (bench/engine.py: twice the rate of one session with two
    threads on two cores). Memory stays bounded by the workers, the batch size and the
    chunks in flight, however many paths.

    Args:
        engine: the model (:func:`smokerdet.inference.backend.open_engine`).
        paths: image files.
        batch_size: images per run (default: :data:`ONNX_BATCH_SIZE` for ONNX, else
            :data:`DEFAULT_BATCH_SIZE`).
        workers: worker processes (0: all in this process). Default: :func:`onnx_workers`
            for ONNX, :func:`default_workers` for torch. A torch engine writing heatmaps
            scores in this process.
        heatmaps: a folder to write ``<stem>-<hash>.heatmap.png`` overlays into.
        familiarity: the model's familiarity stats: each photo's score comes from the same
            forward pass as its probability (:mod:`smokerdet.familiarity`).
    """
    if engine.backend == "torch" and heatmaps is None:
        loaded = engine.loaded  # type: ignore[attr-defined]
        yield from score_files(
            loaded,
            paths,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            workers=workers,
            device=engine.device,  # type: ignore[attr-defined]
            familiarity=familiarity,
        )
        return
    size = batch_size or (ONNX_BATCH_SIZE if engine.backend == "onnx" else DEFAULT_BATCH_SIZE)
    n_workers = onnx_workers(len(paths)) if workers is None else workers
    if engine.backend != "onnx" or n_workers < 1:
        for i in range(0, len(paths), WORKER_CHUNK):
            stop = min(i + WORKER_CHUNK, len(paths))
            yield from _score_chunk(engine, paths, i, stop, size, heatmaps, familiarity)
        return
    yield from _score_in_workers(engine, paths, size, n_workers, heatmaps, familiarity)


def _score_in_workers(
    engine: Engine,
    paths: Sequence[Path],
    size: int,
    n_workers: int,
    heatmaps: Path | None,
    familiarity: Familiarity | None = None,
) -> Iterator[Scored]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork on Linux: workers start in milliseconds and a user's script needs no __main__
    # guard. Closing this process's session first stops its onnxruntime threads, so that no
    # lock is copied mid-use into the children; it reopens on its next use.
    engine.release()  # type: ignore[attr-defined]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    starts = list(range(0, len(paths), WORKER_CHUNK))
    with ProcessPoolExecutor(
        n_workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(engine.path, engine.name, familiarity),
    ) as pool:
        in_flight: list[Future[list[Scored]]] = []
        for start in starts:
            stop = min(start + WORKER_CHUNK, len(paths))
            chunk = list(paths[start:stop])
            in_flight.append(pool.submit(_score_offset, chunk, start, size, heatmaps))
            if len(in_flight) >= 2 * n_workers:
                yield from in_flight.pop(0).result()
        for future in in_flight:
            yield from future.result()


def _score_offset(chunk: list[Path], start: int, size: int, heatmaps: Path | None) -> list[Scored]:
    """A worker's task: score ``chunk`` (photos ``start...`` of the run), indices shifted."""
    scored = _score_chunk(None, chunk, 0, len(chunk), size, heatmaps)
    return [
        Scored(start + s.index, s.path, s.probability, s.error, s.heatmap, s.familiarity)
        for s in scored
    ]
