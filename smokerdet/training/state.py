"""Everything one run carries from epoch to epoch: the loop works on it, and the resumable
state on disk is written from it (:mod:`smokerdet.training.resume`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet import distributed

if TYPE_CHECKING:
    from smokerdet.models import ModelMeta
    from smokerdet.training.config import TrainConfig
    from smokerdet.training.report import EpochStats


@dataclass
class LoopState:
    """What one run carries from epoch to epoch; with the optimiser's tensors, all a resume
    needs."""

    cfg: TrainConfig
    folder: Path
    meta: ModelMeta  # threshold and val_metrics: those of the best epoch so far
    model: Any
    device: str
    world: distributed.World = field(default_factory=distributed.World)
    epoch: int = 0  # the last finished epoch
    best: tuple[float, float] | None = None  # (val F1, -val loss) of the kept epoch
    best_epoch: int = 0
    stale: int = 0  # fine-tuning epochs since the last improvement
    stopped_early: bool = False
    history: list[EpochStats] = field(default_factory=list)
    # The current phase's optimisation, rebuilt when a phase starts:
    phase: str = ""
    optimizer: Any = None
    scheduler: Any = None
    ema: Any = None
    step: Any = None  # the loop's Stepper

    @property
    def scored_model(self) -> Any:
        """The weights validated and saved: the EMA's with ``--ema``."""
        return self.ema.module if self.ema is not None else self.model
