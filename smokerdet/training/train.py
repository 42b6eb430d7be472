"""Train a timm model with one logit on a smoker dataset: BCE-with-logits, AdamW, cosine schedule.

The loop itself, phase by phase, is in :mod:`smokerdet.loop`; this module is its entry point.

Example:
    >>> from smokerdet.training.train import TrainConfig, train
    >>> result = train(TrainConfig(arch="resnet10t", pretrained=False, data="examples",
    ...                            epochs=1, img_size=64))  # doctest: +SKIP
    >>> result.path  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet import distributed
from smokerdet.errors import ConfigError
from smokerdet.metrics import BinaryMetrics
from smokerdet.models import check_name, model_lock, name_stem, pick_device
from smokerdet.paths import models_dir
from smokerdet.training.config import TrainConfig
from smokerdet.training.loop import (
    Criterion,
    EpochStats,
    Start,
    TrainingInterrupted,
    TrainReporter,
    find_splits,
    fit_familiarity,
    interrupted,
    phases,
    plot_curves,
    prepare,
    run_phase,
    start_info,
)
from smokerdet.training.recipes.head import adapt_head, choose_recipe, site_photos
from smokerdet.training.resume import RESUME_DIR, read_resume_state

if TYPE_CHECKING:
    from smokerdet.data import DatasetSplits

__all__ = [
    "EpochStats",
    "TrainConfig",
    "TrainReporter",
    "TrainResult",
    "TrainingInterrupted",
    "resume_training",
    "train",
]


@dataclass
class TrainResult:
    """What ``train`` produced."""

    name: str
    path: Path
    arch: str
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    threshold: float
    val_metrics: BinaryMetrics | None
    history: list[EpochStats]
    counts: dict[str, dict[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    recipe: str = "full"
    adaptation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "arch": self.arch,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "threshold": self.threshold,
            "val_metrics": self.val_metrics.to_dict() if self.val_metrics else None,
            "history": [asdict(h) for h in self.history],
            "counts": self.counts,
            "skipped": [{"path": p, "error": e} for p, e in self.skipped],
            "seconds": self.seconds,
            "recipe": self.recipe,
            "adaptation": self.adaptation,
        }


def train(
    cfg: TrainConfig,
    reporter: TrainReporter | None = None,
    *,
    resume: bool = False,
    start: Start | None = None,
    criterion: Criterion | None = None,
    splits: DatasetSplits | None = None,
) -> TrainResult:
    """Train a model and save the best epoch's weights to ``<data dir>/models/<name>/``.

    Each epoch is validated as ``predict`` would score the validation files (TTA included),
    at the threshold with the best F1; the epoch with the best such F1 (ties: lower validation
    loss) is saved with that threshold and those metrics. Early stopping watches the same F1.
    At the end of every epoch a resumable state is saved (see :func:`resume_training`).

    Under ``torchrun`` every rank calls this: the main rank picks the name, checks it and
    writes the folder; all ranks train data-parallel and return the same result.

    Args:
        cfg: the options.
        reporter: receives progress; the default is silent.
        resume: continue the interrupted run named ``cfg.name``.
        start: the model to start from, instead of the one ``cfg`` describes (experiments
            such as ``scripts/distill.py``; ignored when resuming).
        criterion: a loss to use instead of BCE, ``criterion(logits, inputs, targets)``.
        splits: the photos to train and validate on, instead of those found in ``cfg.data``
            (:mod:`smokerdet.crossval` passes its folds; an empty ``val`` saves every epoch).

    Raises:
        DatasetNotFoundError, DatasetLayoutError: no usable data.
        UnknownArchError, WeightsError: the model can't be built as asked.
        ConfigError: options that make no sense together, or the name is taken.
        TrainingInterrupted: Ctrl-C; the last finished epoch is kept and can be resumed.
    """
    reporter = reporter or TrainReporter()
    started = time.perf_counter()
    if not (resume or start is not None or distributed.current().distributed):
        if cfg.init is not None and cfg.recipe != "full":
            splits = splits or find_splits(cfg)  # found once, for whichever recipe runs
        if head_recipe(cfg, splits):
            assert splits is not None
            return _adapt(cfg, reporter, splits, started)
    device = pick_device(cfg.device)
    with distributed.session(device) as world, ExitStack() as stack:
        # One rank decides (the name has a timestamp) and checks; every rank gets its answer.
        name = distributed.on_main(lambda: _claim(cfg, resume, stack))
        folder = models_dir() / name
        saved = read_resume_state(folder) if resume else None
        state, data = prepare(cfg, folder, device, saved, start, world, splits)
        reporter.on_start(start_info(state, data, saved.epoch if saved else None))
        if saved is None and world.is_main:  # --overwrite: an old run's state goes now
            shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)
        try:
            for phase in phases(cfg):
                run_phase(state, phase, data, reporter, saved, criterion)
        except KeyboardInterrupt:
            raise interrupted(state) from None
        except RuntimeError as e:  # a collective failed: another rank died or hung
            if not world.distributed:
                raise
            stop = interrupted(state)
            lost = distributed.lost_ranks(world, e, f"; {stop.message.split('; ', 1)[1]}")
            lost.hint = f"{stop.hint}; {lost.hint}"
            raise lost from None
        skipped = [s for part in distributed.all_gather(data.skipped) for s in part]
        if world.is_main:
            shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)
            # After the resume state is gone: a kill here leaves a whole model that only
            # lacks familiarity stats (predict says so), never a half-finished run.
            fit_familiarity(folder, data.splits)
            plot_curves(folder, state.history)

    metrics = state.meta.val_metrics
    return TrainResult(
        name=name,
        path=folder,
        arch=state.meta.arch,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stopped_early=state.stopped_early,
        threshold=state.meta.threshold,
        val_metrics=BinaryMetrics.from_dict(metrics) if metrics else None,
        history=state.history,
        counts=data.splits.counts(),
        skipped=list(dict.fromkeys(skipped)),  # training files: each rank reports them
        seconds=time.perf_counter() - started,
    )


def head_recipe(cfg: TrainConfig, splits: DatasetSplits | None) -> bool:
    """Whether ``cfg`` adapts an existing model head-only on ``splits`` (see
    :mod:`smokerdet.adapt`); ``auto`` decides by their number of photos."""
    if cfg.init is None or cfg.recipe == "full":
        return False
    if cfg.recipe == "head":
        return True
    return splits is not None and choose_recipe(cfg.recipe, len(site_photos(splits))) == "head"


#: Options that shape a fine-tune, which the head recipe does not run.
FINE_TUNE_ONLY = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "img_size",
                  "lp_epochs", "label_smoothing", "ema", "patience", "tta")  # fmt: skip


def ignored_by_head_recipe(cfg: TrainConfig) -> list[str]:
    """The fine-tuning ``--flags`` set to something other than their default."""
    defaults = TrainConfig()
    return [
        "--" + name.replace("_", "-")
        for name in FINE_TUNE_ONLY
        if getattr(cfg, name) != getattr(defaults, name)
    ]


def _adapt(
    cfg: TrainConfig, reporter: TrainReporter, splits: DatasetSplits, started: float
) -> TrainResult:
    pooled = site_photos(splits)
    reporter.on_note(
        f"Adapting {cfg.init} head-only (--recipe {cfg.recipe}) to {len(pooled)} photos "
        f"in {splits.root}"
    )
    unused = ignored_by_head_recipe(cfg)
    if unused:
        reporter.on_note(
            f"Note: {', '.join(unused)} only shape a fine-tune and are not used by the head "
            "recipe (pass --recipe full to fine-tune the whole model)"
        )
    with ExitStack() as stack:
        name = _claim(cfg, False, stack)
        folder = models_dir() / name
        meta, metrics, record = adapt_head(cfg, name, folder, splits)
    pos = sum(s.label for s in pooled)
    return TrainResult(
        name=name,
        path=folder,
        arch=meta.arch,
        best_epoch=0,
        epochs_run=0,
        stopped_early=False,
        threshold=meta.threshold,
        val_metrics=metrics,
        history=[],
        counts={"site": {"smoking": pos, "not_smoking": len(pooled) - pos}},
        seconds=time.perf_counter() - started,
        recipe="head",
        adaptation=record,
    )


def _claim(cfg: TrainConfig, resume: bool, stack: ExitStack) -> str:
    """The run's name, checked free (or resumable), with the model folder's lock held."""
    name = (
        cfg.name
        or f"{name_stem(cfg.init) if cfg.init else cfg.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    )
    check_name(name)
    folder = models_dir() / name
    if folder.exists() and not (cfg.overwrite or resume):
        raise ConfigError(
            f"a model named {name!r} already exists at {folder}",
            hint="choose another --name, or pass --overwrite to replace it",
        )
    if resume:
        read_resume_state(folder)  # says what is wrong before any rank starts
    stack.enter_context(model_lock(folder))
    return name


def resume_training(name: str, reporter: TrainReporter | None = None) -> TrainResult:
    """Continue an interrupted ``train`` run from its last finished epoch.

    Restores the model, optimizer, scheduler, EMA and early-stopping state, and replays the
    remaining epochs with the same per-epoch random seeds, so the result equals an
    uninterrupted run's.

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
    return train(cfg, reporter, resume=True)
