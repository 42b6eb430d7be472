"""The options of ``smokerdet predict`` and ``smokerdet eval``, declared once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smokerdet.config import BACKENDS, _check_common
from smokerdet.data import SPLITS
from smokerdet.errors import ConfigError
from smokerdet.scoring.video import DEFAULT_FPS, check_fps


@dataclass
class ScoringConfig:
    """Options shared by the commands that score images with a trained model."""

    model: str | None = None
    """Model name, folder, .onnx file, 'latest', 'default' (the shipped model), or
    hf://ORG/NAME[@REVISION] from the Hugging Face Hub. Default: the model chosen with
    `smokerdet models default`, else the shipped model."""
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
    fps: float = DEFAULT_FPS
    """Video frames scored a second of video (0: every frame)."""
    events: bool = False
    """Merge each video's frames into smoking events: one row per event (start, end,
    peak_probability, best frame) instead of one per frame."""
    snapshots: Path | None = None
    """With --events, write each event's best frame as a JPEG into this folder (created if
    needed); without it no frame is stored anywhere."""

    def __post_init__(self) -> None:
        check_fps(self.fps)
        if self.snapshots is not None and not self.events:
            raise ConfigError(
                "--snapshots writes the best frame of each event: add --events",
                hint="smokerdet predict clip.mp4 --events --snapshots DIR",
            )
        super().__post_init__()
