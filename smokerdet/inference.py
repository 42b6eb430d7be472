"""Batched scoring of image files with a loaded model: the one code path behind eval and predict.

Because both commands score through :func:`score_files`, the same image gets the same
probability from ``smokerdet eval`` and ``smokerdet predict``.

On a CPU the model runs *inside* the worker processes, one per core with one thread each:
a small convolutional network scales poorly across cores within one forward pass, but
perfectly across processes (bench/predict.py: 2 processes x 1 thread score ~1.5x as many
images per second as 1 process x 2 threads on the 2-core build machine). On a GPU, workers
only decode and the main process runs the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smokerdet.checkpoint import LoadedModel
from smokerdet.data import ImageFileDataset, collate_scored, eval_transform

#: Images per forward pass. Small batches stay in the CPU's cache and measured fastest there
#: (bench/predict.py); pass a larger --batch-size on a GPU.
DEFAULT_BATCH_SIZE = 4

#: At most this many scoring processes by default: each holds its own activations.
MAX_DEFAULT_WORKERS = 4


@dataclass(frozen=True)
class Scored:
    """One file's outcome: its probability of smoking, or why it has none."""

    index: int
    path: Path
    probability: float | None
    error: str | None


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


def forward_probs(loaded: LoadedModel, batch: object, device: str) -> list[float]:
    """Probabilities of smoking for a normalised batch, with the model's own TTA."""
    import torch

    x = batch.to(device, non_blocking=True)  # type: ignore[attr-defined]
    if device == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = loaded.model(x).float().reshape(-1)
        if loaded.meta.tta == "hflip":
            logits = (logits + loaded.model(torch.flip(x, dims=[3])).float().reshape(-1)) / 2
        return torch.sigmoid(logits).tolist()


class _CollateAndScore:
    """A ``collate_fn`` that also runs the model. DataLoader calls ``collate_fn`` inside the
    worker that produced the batch, so each CPU worker decodes *and* scores its batches."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    def __call__(
        self, items: list[tuple[int, Any, str | None]]
    ) -> tuple[list[int], list[float], list[tuple[int, str]]]:
        indices, tensor, failures = collate_scored(items)
        probs = forward_probs(self.loaded, tensor, "cpu") if tensor is not None else []
        return indices, probs, failures


def score_files(
    loaded: LoadedModel,
    paths: Sequence[Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "cpu",
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
        collate_fn=_CollateAndScore(loaded) if score_in_workers else collate_scored,
        pin_memory=device == "cuda",
        prefetch_factor=(2 if score_in_workers else 4) if n_workers else None,
    )
    for indices, scored, failures in loader:
        if score_in_workers:
            probs = scored
        else:
            probs = forward_probs(loaded, scored, device) if scored is not None else []
        outcome: dict[int, tuple[float | None, str | None]] = {
            i: (p, None) for i, p in zip(indices, probs, strict=True)
        }
        outcome.update({i: (None, err) for i, err in failures})
        for i in sorted(outcome):
            prob, err = outcome[i]
            yield Scored(index=i, path=paths[i], probability=prob, error=err)
