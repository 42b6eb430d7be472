"""The one preprocessor (``smokerdet.data.images.preprocess``) as torch tensors, for the benches
that time torch directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def eval_transform(cfg: Any) -> Callable[[Any], Any]:
    """An RGB photo -> the model's normalised ``(3, S, S)`` float32 tensor (predict's own)."""
    import torch

    from smokerdet.data.images import preprocess

    return lambda im: torch.from_numpy(preprocess(im, cfg))
