"""Batched scoring of image files with a loaded model: the one code path behind eval and predict.

Because both commands score through :func:`score_files`, the same image gets the same
probability from ``smokerdet eval`` and ``smokerdet predict``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smokerdet.checkpoint import LoadedModel
from smokerdet.data import ImageFileDataset, collate_scored, eval_transform

#: Images per forward pass. Small batches stay in the CPU's cache and measured fastest there
#: (bench/predict.py); pass a larger --batch-size on a GPU.
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Scored:
    """One file's outcome: its probability of smoking, or why it has none."""

    index: int
    path: Path
    probability: float | None
    error: str | None


def default_workers(n_items: int, batch_size: int) -> int:
    """Decoding worker processes: none for a single batch; else one core's worth fewer than
    the machine has (at least 1, at most 4), so decoding overlaps the forward passes without
    taking the cores they run on."""
    if n_items <= batch_size:
        return 0
    return max(1, min(4, (os.cpu_count() or 1) - 1))


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


def score_files(
    loaded: LoadedModel,
    paths: Sequence[Path],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "cpu",
) -> Iterator[Scored]:
    """Score ``paths`` in order, streaming batches through a DataLoader.

    Memory stays bounded by the batch size and the prefetch depth, whatever the number of
    paths. A file that cannot be read yields a :class:`Scored` with its ``error`` set.
    """
    import torch
    from torch.utils.data import DataLoader

    if device == "cpu":
        loaded.model.to(memory_format=torch.channels_last)
    transform = eval_transform(loaded.meta.data_config)
    dataset = ImageFileDataset(paths, transform, draft_size=loaded.meta.data_config.input_size)
    n_workers = default_workers(len(paths), batch_size) if workers is None else workers
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=n_workers,
        collate_fn=collate_scored,
        pin_memory=device == "cuda",
        prefetch_factor=4 if n_workers else None,
    )
    for indices, tensor, failures in loader:
        probs = forward_probs(loaded, tensor, device) if tensor is not None else []
        outcome: dict[int, tuple[float | None, str | None]] = {
            i: (p, None) for i, p in zip(indices, probs, strict=True)
        }
        outcome.update({i: (None, err) for i, err in failures})
        for i in sorted(outcome):
            prob, err = outcome[i]
            yield Scored(index=i, path=paths[i], probability=prob, error=err)
