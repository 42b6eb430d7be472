"""``smokerdet train``'s entry point: join the torchrun process group, pick the recipe once, run it.

The recipes are siblings over the shared epoch loop (:mod:`smokerdet.training.loop`):

* :mod:`~smokerdet.training.recipes.full`: fine-tune the whole model (the default);
* :mod:`~smokerdet.training.recipes.head`: with ``--init`` and few photos (``--recipe auto``:
  up to :data:`~smokerdet.training.recipes.head.HEAD_MAX_PHOTOS`), refit only the head;
* :mod:`~smokerdet.training.recipes.crossval`: with ``--cv K``, pick the epoch count and
  threshold by K-fold cross-validation, then train on all the photos.

Example:
    >>> from smokerdet.training import TrainConfig, train
    >>> result = train(TrainConfig(arch="resnet10t", pretrained=False, data="examples",
    ...                            epochs=1, img_size=64))  # doctest: +SKIP
    >>> result.path  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smokerdet import distributed
from smokerdet.errors import ConfigError
from smokerdet.models import check_name, pick_device
from smokerdet.paths import models_dir
from smokerdet.training.config import TrainConfig
from smokerdet.training.data import find_splits
from smokerdet.training.recipes import crossval, full, head
from smokerdet.training.recipes.crossval import CVResult
from smokerdet.training.report import TrainReporter, TrainResult
from smokerdet.training.resume import read_resume_state

if TYPE_CHECKING:
    from smokerdet.data import DatasetSplits
    from smokerdet.training.loop import Criterion
    from smokerdet.training.start import Start

__all__ = ["choose_recipe", "resume_training", "train"]


def train(
    cfg: TrainConfig,
    reporter: TrainReporter | None = None,
    *,
    resume: bool = False,
    start: Start | None = None,
    criterion: Criterion | None = None,
    splits: DatasetSplits | None = None,
) -> TrainResult | CVResult:
    """Train a model as ``cfg`` says and save it in ``<data dir>/models/<name>/``.

    Under ``torchrun`` every rank calls this: it joins the process group here, the main rank
    picks the name, checks it, reports progress and writes the folder; all ranks train
    data-parallel and return the same result.

    Args:
        cfg: the options; they choose the recipe (see :func:`choose_recipe`).
        reporter: receives progress (on the main rank); the default is silent.
        resume: continue the interrupted run named ``cfg.name`` (the full recipe).
        start: the model to start from, instead of the one ``cfg`` describes (experiments
            such as ``scripts/distill.py``: the full recipe; ignored when resuming).
        criterion: a loss to use instead of BCE, ``criterion(logits, inputs, targets)``
            (the full recipe).
        splits: the photos to train and validate on, instead of those found in ``cfg.data``.

    Returns:
        The saved model's :class:`TrainResult`; with ``--cv``, a :class:`CVResult` around it.

    Raises:
        DatasetNotFoundError, DatasetLayoutError: no usable data.
        UnknownArchError, WeightsError: the model can't be built as asked.
        ConfigError: options that make no sense together, or the name is taken.
        TrainingInterrupted: Ctrl-C; the last finished epoch is kept and can be resumed.
    """
    device = pick_device(cfg.device)
    with distributed.session(device) as world:
        talk = reporter if reporter is not None and world.is_main else TrainReporter()
        found = splits or find_splits(cfg)
        custom = resume or start is not None or criterion is not None
        recipe = "full" if custom else choose_recipe(cfg, found)
        if recipe == "head":  # one process refits; the others get its result
            return distributed.on_main(lambda: head.adapt(cfg, talk, found))
        if recipe == "crossval":
            return crossval.cross_validate(cfg, talk, splits=found, device=device)
        return full.fine_tune(
            cfg, talk, found, device=device, resume=resume, start=start, criterion=criterion
        )


def choose_recipe(cfg: TrainConfig, splits: DatasetSplits) -> str:
    """``head``, ``crossval`` or ``full``: the one place the recipe is chosen.

    With ``--init``, ``--recipe head`` (or ``auto`` with few enough photos) refits the head;
    otherwise ``--cv K`` cross-validates, and the rest fine-tunes.
    """
    if cfg.init is not None and cfg.recipe != "full":
        photos = len(head.site_photos(splits))
        if cfg.recipe == "head" or photos <= head.HEAD_MAX_PHOTOS:
            return "head"
    return "crossval" if cfg.cv else "full"


def resume_training(name: str, reporter: TrainReporter | None = None) -> TrainResult:
    """Continue an interrupted ``train`` run from its last finished epoch.

    Restores the model, optimizer, scheduler, EMA and early-stopping state, and replays the
    remaining epochs with the same per-epoch random seeds, so the result equals an
    uninterrupted run's. A run killed after its last epoch, while it wrote its final files,
    runs no epoch and writes them.

    Raises:
        ModelNotFoundError: no model of that name, or it has nothing to resume.
        ConfigError: it is the final model of a ``--cv`` run (those start again).
    """
    check_name(name)
    state = read_resume_state(models_dir() / name)
    cfg = TrainConfig(**{**state.json["config"], "name": name})
    if cfg.cv:
        raise ConfigError(
            f"{name} is the final model of a --cv run, which can't be resumed",
            hint="run the same smokerdet train --cv command again, with --overwrite",
        )
    result = train(cfg, reporter, resume=True)
    assert isinstance(result, TrainResult)  # resuming runs the full recipe
    return result
