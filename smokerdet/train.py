"""Train a timm model with one logit on a smoker dataset: BCE-with-logits, AdamW, cosine schedule.

The loop itself, phase by phase, is in :mod:`smokerdet.loop`; this module is its entry point.

Example:
    >>> from smokerdet.train import TrainConfig, train
    >>> result = train(TrainConfig(arch="resnet10t", pretrained=False, data="examples",
    ...                            epochs=1, img_size=64))  # doctest: +SKIP
    >>> result.path  # doctest: +SKIP
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smokerdet.checkpoint import check_name, model_lock
from smokerdet.errors import ConfigError
from smokerdet.loop import (
    Criterion,
    EpochStats,
    Start,
    TrainingInterrupted,
    TrainReporter,
    interrupted,
    phases,
    prepare,
    run_phase,
    start_info,
)
from smokerdet.metrics import BinaryMetrics
from smokerdet.model import DEFAULT_ARCH, MAX_INPUT_SIZE, MIN_INPUT_SIZE, pick_device
from smokerdet.paths import models_dir
from smokerdet.resume import RESUME_DIR, read_resume_state

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
class TrainConfig:
    """Options of ``smokerdet train``; each check names the flag to change."""

    arch: str = DEFAULT_ARCH
    """timm model name (``--arch``)."""
    data: Path | str | None = None
    """Dataset folder (``--data``); defaults to the downloaded dataset."""
    epochs: int = 20
    """Maximum number of fine-tuning epochs (``--epochs``)."""
    batch_size: int = 32
    """Images per optimisation step (``--batch-size``)."""
    lr: float = 5e-4
    """Peak learning rate of AdamW (``--lr``)."""
    weight_decay: float = 0.05
    """AdamW weight decay (``--weight-decay``)."""
    img_size: int | None = None
    """Square input size; defaults to the model's own (``--img-size``)."""
    pretrained: bool = True
    """Start from timm's ImageNet weights (``--pretrained/--no-pretrained``)."""
    weights: Path | str | None = None
    """Local backbone state dict to start from (``--weights``)."""
    init: str | None = None
    """An existing smokerdet model to fine-tune: default, a name or a path (``--init``)."""
    seed: int = 42
    """Seed for the split, the initialisation and the augmentation (``--seed``)."""
    name: str | None = None
    """Model name under the data dir (``--name``); defaults to ARCH-TIMESTAMP."""
    overwrite: bool = False
    """Replace an existing model of the same name (``--overwrite``)."""
    patience: int = 5
    """Stop after this many epochs without a better validation F1; 0 disables (``--patience``)."""
    device: str = "auto"
    """auto, cpu, cuda or mps (``--device``)."""
    workers: int | None = None
    """DataLoader worker processes (``--workers``); default: two cores fewer than the machine
    has, at most 4 (none on a 2-core machine, where workers only steal the model's cores)."""
    warmup_epochs: float = 1.0
    """Linear warmup length, in epochs (``--warmup-epochs``)."""
    label_smoothing: float = 0.0
    """Pull BCE targets towards 0.5 by this amount (``--label-smoothing``)."""
    lp_epochs: int = 0
    """Linear-probe epochs (backbone frozen) before fine-tuning: LP-FT (``--lp-epochs``)."""
    tta: bool = False
    """Average the prediction with a horizontally flipped copy at test time (``--tta``)."""
    half: bool = False
    """Store the weights in fp16, half the size (``--half``)."""
    ema: float = 0.0
    """Keep an exponential moving average of the weights with this decay per step, and
    validate and save it; 0 disables (``--ema``)."""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.img_size is not None and not MIN_INPUT_SIZE <= self.img_size <= MAX_INPUT_SIZE:
            raise ConfigError(
                f"--img-size must be between {MIN_INPUT_SIZE} and {MAX_INPUT_SIZE}, "
                f"got {self.img_size}"
            )
        if self.patience < 0:
            raise ConfigError(f"--patience must be >= 0, got {self.patience}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (self.ema == 0 or 0.5 <= self.ema < 1):
            raise ConfigError(f"--ema must be 0 (off) or a decay in [0.5, 1), got {self.ema}")
        if self.lp_epochs < 0:
            raise ConfigError(f"--lp-epochs must be >= 0, got {self.lp_epochs}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if self.weights is not None and self.init is not None:
            raise ConfigError("--weights and --init both say where to start: give one")
        if self.name is not None:
            check_name(self.name)


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
        }


def train(
    cfg: TrainConfig,
    reporter: TrainReporter | None = None,
    *,
    resume: bool = False,
    start: Start | None = None,
    criterion: Criterion | None = None,
) -> TrainResult:
    """Train a model and save the best epoch's weights to ``<data dir>/models/<name>/``.

    Each epoch is validated as ``predict`` would score the validation files (TTA included),
    at the threshold with the best F1; the epoch with the best such F1 (ties: lower validation
    loss) is saved with that threshold and those metrics. Early stopping watches the same F1.
    At the end of every epoch a resumable state is saved (see :func:`resume_training`).

    Args:
        cfg: the options.
        reporter: receives progress; the default is silent.
        resume: continue the interrupted run named ``cfg.name``.
        start: the model to start from, instead of the one ``cfg`` describes (experiments
            such as ``scripts/distill.py``; ignored when resuming).
        criterion: a loss to use instead of BCE, ``criterion(logits, inputs, targets)``.

    Raises:
        DatasetNotFoundError, DatasetLayoutError: no usable data.
        UnknownArchError, WeightsError: the model can't be built as asked.
        ConfigError: options that make no sense together, or the name is taken.
        TrainingInterrupted: Ctrl-C; the last finished epoch is kept and can be resumed.
    """
    reporter = reporter or TrainReporter()
    started = time.perf_counter()
    name = cfg.name or f"{cfg.init or cfg.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    check_name(name)
    folder = models_dir() / name
    if folder.exists() and not (cfg.overwrite or resume):
        raise ConfigError(
            f"a model named {name!r} already exists at {folder}",
            hint="choose another --name, or pass --overwrite to replace it",
        )
    saved = read_resume_state(folder) if resume else None

    with model_lock(folder):
        state, data = prepare(cfg, folder, pick_device(cfg.device), saved, start)
        reporter.on_start(start_info(state, data, saved.epoch if saved else None))
        if saved is None:  # --overwrite: an old run's resume state goes once training starts
            shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)
        try:
            for phase in phases(cfg):
                run_phase(state, phase, data, reporter, saved, criterion)
        except KeyboardInterrupt:
            raise interrupted(state) from None
        shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)

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
        skipped=data.skipped,
        seconds=time.perf_counter() - started,
    )


def resume_training(name: str, reporter: TrainReporter | None = None) -> TrainResult:
    """Continue an interrupted ``train`` run from its last finished epoch.

    Restores the model, optimizer, scheduler, EMA and early-stopping state, and replays the
    remaining epochs with the same per-epoch random seeds, so the result equals an
    uninterrupted run's.

    Raises:
        ModelNotFoundError: no model of that name, or it has nothing to resume.
    """
    check_name(name)
    state = read_resume_state(models_dir() / name)
    cfg = TrainConfig(**{**state.json["config"], "name": name})
    return train(cfg, reporter, resume=True)
