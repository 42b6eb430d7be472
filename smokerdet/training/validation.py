"""Validation through the one inference path: the photos are scored exactly as ``predict``
scores them, so the threshold stored in ``model.json`` is the threshold of the predict pipeline.

The validation photos are decoded once per run, as predict decodes them
(:func:`smokerdet.data.load_image` at the model's input size, then
:func:`smokerdet.data.preprocess`), and kept in memory as arrays; each epoch scores them with
:class:`~smokerdet.inference.torch_backend.TorchEngine` around the model being trained (the
same forward pass, TTA and sigmoid as predict). The epoch kept is the one whose F1 at its own
best threshold is highest: one validation pass picks the epoch and calibrates it.

Under ``torchrun`` each rank scores its slice of the validation photos; the probabilities are
gathered in order, so that every photo counts once and every rank computes the same numbers.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet import distributed
from smokerdet.data import Sample, load_image, preprocess
from smokerdet.errors import DatasetLayoutError, ImageLoadError
from smokerdet.metrics import BinaryMetrics, best_threshold, binary_metrics
from smokerdet.models import LoadedModel

if TYPE_CHECKING:
    import numpy as np

    from smokerdet.data import DataConfig
    from smokerdet.models import ModelMeta

log = logging.getLogger("smokerdet")

#: Validation images per forward pass (the result does not depend on it).
VAL_BATCH_SIZE = 64


@dataclass
class ValidationSet:
    """Labelled photos decoded once, as the model's inputs."""

    x: np.ndarray | None  # (N, 3, S, S) float32, as predict feeds the model; None if N is 0
    y: list[int]
    paths: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _input(path: Path, data_cfg: DataConfig) -> tuple[Any, str | None]:
    try:
        return preprocess(load_image(path, draft_size=data_cfg.input_size), data_cfg), None
    except ImageLoadError as e:
        return None, e.reason
    except Exception as e:  # as predict: a photo that breaks preprocessing is skipped, not fatal
        return None, f"could not preprocess ({type(e).__name__}: {e})"


def decode_validation(samples: Sequence[Sample], data_cfg: DataConfig) -> ValidationSet:
    """Decode and preprocess ``samples`` as predict does; unreadable ones are skipped with a
    warning."""
    import numpy as np

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        inputs = list(pool.map(lambda s: _input(s.path, data_cfg), samples))
    arrays, y, paths, skipped = [], [], [], []
    for (array, error), sample in zip(inputs, samples, strict=True):
        if error is None:
            arrays.append(array)
            y.append(sample.label)
            paths.append(str(sample.path))
        else:
            skipped.append((str(sample.path), error))
            log.warning("skipped %s: %s", sample.path, error)
    return ValidationSet(np.stack(arrays) if arrays else None, y, paths, skipped)


@dataclass
class Validation:
    """One validation pass: the loss, and the metrics at the threshold with the best F1."""

    loss: float
    threshold: float
    metrics: BinaryMetrics


def probabilities(loaded: LoadedModel, x: np.ndarray | None, device: str) -> list[float]:
    """The probability of smoking of each input, by predict's forward pass (TTA included)."""
    from smokerdet.inference.torch_backend import TorchEngine

    engine = TorchEngine(loaded, device)
    probs: list[float] = []
    for i in range(0, 0 if x is None else len(x), VAL_BATCH_SIZE):
        assert x is not None
        probs += engine.score_arrays(x[i : i + VAL_BATCH_SIZE])
    return probs


def validation_of(y: list[int], probs: list[float]) -> Validation:
    """The loss, best-F1 threshold and metrics of probabilities ``probs`` for labels ``y``."""
    import torch

    target = torch.tensor(y, dtype=torch.float32)
    loss = torch.nn.functional.binary_cross_entropy(torch.tensor(probs), target).item()
    threshold = best_threshold(y, probs)
    return Validation(loss, threshold, binary_metrics(y, probs, threshold))


def as_saved(model: Any, half: bool) -> Any:
    """The model as it will load from disk: with ``--half``, weights rounded through fp16."""
    if not half:
        return model
    twin = copy.deepcopy(model)
    state = twin.state_dict()
    twin.load_state_dict({k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    return twin


def validate(
    model: Any, meta: ModelMeta, folder: Path, device: str, half: bool, val: ValidationSet
) -> Validation | None:
    """Score this rank's validation photos with ``model`` as it would be saved and predicted
    with; every rank gets the numbers of all ranks' photos. None without a usable photo."""
    probs: list[float] = []
    if val.x is not None:
        saved = as_saved(model, half).eval()
        loaded = LoadedModel(model=saved, meta=meta, path=folder, name=folder.name)
        probs = probabilities(loaded, val.x, device)
    slices = distributed.all_gather((val.y, probs))
    y = [label for ys, _ in slices for label in ys]
    if not y:
        return None
    return validation_of(y, [p for _, ps in slices for p in ps])


def score_samples(
    loaded: LoadedModel, samples: Sequence[Sample], device: str = "cpu"
) -> list[tuple[str, int, float]]:
    """(path, label, probability) of each readable sample, scored as validation is."""
    val = decode_validation(samples, loaded.meta.data_config)
    loaded.model.eval().to(device)
    return list(zip(val.paths, val.y, probabilities(loaded, val.x, device), strict=True))


def calibrate(loaded: LoadedModel, samples: Sequence[Sample], device: str = "cpu") -> Validation:
    """Validation numbers of a model changed outside training (weight averaging, fp16).

    Store them with ``meta.threshold = v.threshold; meta.val_metrics = v.metrics.to_dict()``
    before :func:`smokerdet.models.save_model`.

    Raises:
        DatasetLayoutError: none of ``samples`` could be read.
    """
    scored = score_samples(loaded, samples, device)
    if not scored:
        raise DatasetLayoutError(f"none of the {len(samples)} validation images could be read")
    return validation_of([y for _, y, _ in scored], [p for _, _, p in scored])
