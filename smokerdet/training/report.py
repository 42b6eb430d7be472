"""What a training run tells: its progress (per-epoch numbers, to a reporter), its result, and
the error of a run stopped by Ctrl-C. Every recipe reports through these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smokerdet.errors import Interrupted
from smokerdet.metrics import BinaryMetrics


@dataclass
class EpochStats:
    """One epoch's numbers, as shown in the per-epoch table.

    The validation metrics are taken at ``val_threshold``, the threshold with the best F1 on
    validation for this epoch: the one ``model.json`` stores if the epoch is kept.
    """

    epoch: int
    phase: str
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    val_precision: float | None
    val_recall: float | None
    val_f1: float | None
    lr: float
    seconds: float
    images_per_second: float
    improved: bool
    val_threshold: float | None = None


class TrainReporter:
    """Receives progress; the default one says nothing. The CLI draws bars and tables."""

    def on_start(self, info: dict[str, Any]) -> None:
        """Called once with the model, data and device in use."""

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        """Called before each epoch with its number of steps."""

    def on_step(self, loss: float) -> None:
        """Called after each optimisation step with the batch loss."""

    def on_epoch_end(self, stats: EpochStats) -> None:
        """Called after each epoch's validation."""

    def on_note(self, message: str) -> None:
        """Called with a line worth telling the user (e.g. which recipe runs)."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training; the last finished epoch is on disk."""


@dataclass
class TrainResult:
    """What a training recipe produced: the saved model and how it got there."""

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
