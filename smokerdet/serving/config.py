"""The options of ``smokerdet serve``, declared once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smokerdet.config import DEVICES
from smokerdet.data import MAX_IMAGE_PIXELS
from smokerdet.errors import ConfigError


@dataclass
class ServeConfig:
    """Options of ``smokerdet serve``; each check names the flag to change."""

    model: str | None = None
    """Model name, folder, ``.onnx`` file or hf://ORG/NAME[@REVISION]; default: the chosen
    default, else the shipped one."""
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
