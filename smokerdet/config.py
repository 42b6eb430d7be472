"""The options of each command, declared once: defaults, checks and help text.

Each field's docstring is the ``--help`` text of its option (the CLI reads it with
:func:`field_help`), each default is the option's default, and ``__post_init__`` holds every
check, with messages that name the ``--flag``. The option of a field is its name with dashes
(``batch_size`` is ``--batch-size``). Nothing here imports torch.

Example:
    >>> from smokerdet.config import TrainConfig
    >>> TrainConfig(arch="resnet10t", epochs=2).batch_size
    32
    >>> TrainConfig(epochs=0)
    Traceback (most recent call last):
    ...
    smokerdet.errors.ConfigError: --epochs must be at least 1, got 0
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from smokerdet.data import MAX_IMAGE_PIXELS, SPLITS
from smokerdet.errors import ConfigError, SmokerdetError
from smokerdet.model import DEFAULT_ARCH, MAX_INPUT_SIZE, MIN_INPUT_SIZE

DEVICES = ("auto", "cpu", "cuda", "mps")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string right under it), as one line of help.

    Example:
        >>> field_help(TrainConfig)["epochs"]
        'Maximum fine-tuning epochs.'
    """
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # base classes first; subclasses override
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (frozen app): help without text, not a crash
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                found[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return found


BACKENDS = ("auto", "onnx", "torch")
RECIPES = ("auto", "head", "full")


def _check_common(
    *, batch_size: int | None, workers: int | None, device: str, threshold: float | None = None
) -> None:
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}")
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}")


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
    """Fine-tune an existing smokerdet model: 'default', a name or a path. Keeps its
    architecture and preprocessing."""
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
            from smokerdet.checkpoint import check_name

            check_name(self.name)
        self._decide_start()

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
    from smokerdet.checkpoint import read_meta, resolve_model

    try:
        return read_meta(resolve_model(spec)[1]).arch
    except SmokerdetError:
        return None


@dataclass
class ScoringConfig:
    """Options shared by the commands that score images with a trained model."""

    model: str | None = None
    """Model name, folder, .onnx file, 'latest' or 'default' (the shipped model). Default: the
    model chosen with `smokerdet models default`, else the shipped model."""
    threshold: float | None = None
    """Probability from which a photo is 'smoking'. Default: the model's."""
    batch_size: int | None = None
    """Images per batch. Default: 1 through ONNX Runtime, 4 through torch."""
    workers: int | None = None
    """Worker processes. On a CPU each decodes and scores its own batches (one per core, at
    most 4, by default; 0: all in this process); on a GPU they decode."""
    device: str = "auto"
    """Where to run."""
    backend: str = "auto"
    """How to run the model: auto (ONNX Runtime when the model has an ONNX file and runs on
    the CPU, else torch), onnx or torch."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        _check_common(
            batch_size=self.batch_size,
            workers=self.workers,
            device=self.device,
            threshold=self.threshold,
        )


@dataclass
class EvalConfig(ScoringConfig):
    """Options of ``smokerdet eval``."""

    data: Path | str | None = None
    """Dataset folder. Default: the downloaded dataset."""
    split: str = "test"
    """Which split to score: test, val, train or all."""
    seed: int = 42
    """Seed of the split of a folder without split folders; use training's."""

    def __post_init__(self) -> None:
        if self.split not in (*SPLITS, "all"):
            raise ConfigError(f"--split must be test, val, train or all, not {self.split!r}")
        super().__post_init__()


@dataclass
class PredictConfig(ScoringConfig):
    """Options of ``smokerdet predict`` (the paths to label are its arguments)."""

    recursive: bool = True
    """Walk folders recursively."""


@dataclass
class ServeConfig:
    """Options of ``smokerdet serve``; each check names the flag to change."""

    model: str | None = None
    """Model name, folder or ``.onnx`` file; default: the chosen default, else the shipped one."""
    host: str = "127.0.0.1"
    """Address to listen on. Anything but loopback should come with --token."""
    port: int = 8000
    """TCP port (0: any free port, printed at start)."""
    token: str | None = None
    """Require 'Authorization: Bearer TOKEN' on every API call (or set SMOKERDET_TOKEN)."""
    collect: Path | None = None
    """Save reviewed photos into DIR/smoking/ and DIR/not_smoking/ (for train --data DIR)."""
    max_body_mb: float = 20.0
    """Largest request body, in MiB."""
    max_files: int = 16
    """Most images in one request."""
    max_pixels: int = MAX_IMAGE_PIXELS
    """Largest image, in pixels (width x height)."""
    threads: int = 2
    """Inferences run at once, each in a worker thread."""
    device: str = "auto"
    """Where to run the model: auto, cpu, cuda or mps."""

    def __post_init__(self) -> None:
        if self.collect is not None:
            self.collect = Path(self.collect)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 0 and 65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ConfigError("--token must not be empty")
        if not self.max_body_mb > 0:
            raise ConfigError(f"--max-body-mb must be positive, got {self.max_body_mb}")
        if self.max_files < 1:
            raise ConfigError(f"--max-files must be at least 1, got {self.max_files}")
        if self.max_pixels < 1:
            raise ConfigError(f"--max-pixels must be at least 1, got {self.max_pixels}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.collect is not None and self.collect.exists() and not self.collect.is_dir():
            raise ConfigError(f"--collect {self.collect} exists and is not a folder")

    def check(self) -> None:
        """Check again (fields may have been changed after construction)."""
        self.__post_init__()

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
