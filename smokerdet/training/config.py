"""The options of ``smokerdet train``, declared once (see :mod:`smokerdet.config`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smokerdet.config import RECIPES, _check_common
from smokerdet.errors import ConfigError, SmokerdetError
from smokerdet.models import DEFAULT_ARCH, MAX_INPUT_SIZE, MIN_INPUT_SIZE


@dataclass
class TrainConfig:
    """Options of ``smokerdet train``; each check names the flag to change."""

    arch: str | None = None
    """Any timm model name. Default: resnet50, or with --init the model's own."""
    data: Path | str | None = None
    """Dataset folder. Default: the downloaded dataset."""
    epochs: int = 20
    """Maximum fine-tuning epochs."""
    batch_size: int = 32
    """Images per optimisation step."""
    lr: float = 5e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    img_size: int | None = None
    """Square input size. Default: the model's own."""
    pretrained: bool = True
    """Start from timm's ImageNet weights (fails if they can't be had; never silently random).
    Off with --weights or --init, which say where to start."""
    weights: Path | str | None = None
    """Local backbone state dict (.safetensors or .pth)."""
    init: str | None = None
    """Fine-tune an existing smokerdet model: 'default', a name, a path or
    hf://ORG/NAME[@REVISION]. Keeps its architecture and preprocessing."""
    seed: int = 42
    """Random seed (data split, init, augmentation)."""
    name: str | None = None
    """Model name. Default: ARCH-TIMESTAMP."""
    overwrite: bool = False
    """Replace an existing model of that --name."""
    patience: int = 5
    """Early-stopping patience in epochs (0: off)."""
    device: str = "auto"
    """Where to run."""
    workers: int | None = None
    """Augmentation worker processes. Default: two fewer than the cores, at most 4 (none on a
    2-core machine, where workers only steal the model's cores)."""
    warmup_epochs: float = 1.0
    """Linear warmup length, in epochs."""
    label_smoothing: float = 0.0
    """BCE label smoothing: pull the targets towards 0.5 by this amount."""
    lp_epochs: int = 0
    """Linear-probe epochs (backbone frozen) before fine-tuning (LP-FT)."""
    tta: bool = False
    """Store horizontal-flip test-time augmentation."""
    half: bool = False
    """Store the weights in fp16, half the size."""
    ema: float = 0.0
    """EMA decay per step for the validated and saved weights (0: off, e.g. 0.99)."""
    cv: int = 0
    """Choose the epoch count and threshold by K-fold cross-validation over the training and
    validation photos, then train the final model on all of them; 0 disables. With the
    head recipe: the folds that estimate its accuracy on the site's photos (default: up to
    5)."""
    recipe: str = "auto"
    """With --init: 'head' refits only the classifier on the frozen backbone (with rehearsal
    of the original photos, accuracy cross-validated on yours), 'full' fine-tunes
    everything; 'auto' takes head up to 300 photos."""

    def __post_init__(self) -> None:
        _check_common(batch_size=self.batch_size, workers=self.workers, device=self.device)
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
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
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (self.ema == 0 or 0.5 <= self.ema < 1):
            raise ConfigError(f"--ema must be 0 (off) or a decay in [0.5, 1), got {self.ema}")
        if self.lp_epochs < 0:
            raise ConfigError(f"--lp-epochs must be >= 0, got {self.lp_epochs}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        if self.cv < 0 or self.cv == 1:
            raise ConfigError(
                f"--cv must be 0 (off) or at least 2 folds, got {self.cv}",
                hint="--cv 5 is a common choice",
            )
        if self.recipe not in RECIPES:
            raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, not {self.recipe!r}")
        if self.recipe == "head" and self.init is None:
            raise ConfigError(
                "--recipe head refits the head of an existing model: it needs --init",
                hint="add --init default (or a model name), or drop --recipe",
            )
        if self.weights is not None and self.init is not None:
            raise ConfigError("--weights and --init both say where to start: give one")
        if self.name is not None:
            from smokerdet.models import check_name

            check_name(self.name)
        self._decide_start()

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-able values (paths as strings), as ``model.json`` records them."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def _decide_start(self) -> None:
        """Settle ``arch`` and ``pretrained``: the one place that decides where training starts."""
        if self.weights is not None or self.init is not None:
            self.pretrained = False  # the given weights are the start, not ImageNet's
        if self.init is None:
            self.arch = self.arch or DEFAULT_ARCH
            return
        init_arch = _model_arch(self.init)
        if self.arch is not None and init_arch is not None and self.arch != init_arch:
            raise ConfigError(
                f"--arch {self.arch} differs from the --init model's {init_arch}: --init "
                "fine-tunes that model, so its architecture can't change",
                hint="leave --arch out, or drop --init to train a new model of that --arch",
            )
        self.arch = self.arch or init_arch or DEFAULT_ARCH


def _model_arch(spec: str) -> str | None:
    """The architecture of model ``spec``, or None if it can't be read here.

    A missing or broken model is reported by ``train`` when it loads it, with its own hint.
    """
    from smokerdet.models import read_meta, resolve_model

    try:
        return read_meta(resolve_model(spec)[1]).arch
    except SmokerdetError:
        return None
