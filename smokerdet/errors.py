"""The errors smokerdet raises, each in a user's terms and with a hint.

``smokerdet.cli.main`` turns any :class:`SmokerdetError` into ``Error: ...`` plus
``Hint: ...`` on stderr and exits with its ``exit_code``.
"""

from __future__ import annotations


class SmokerdetError(Exception):
    """Base class: a message for a person, an optional hint and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(SmokerdetError):
    """A value or combination of options makes no sense; the message names the --flag."""

    exit_code = 2


class DatasetLayoutError(SmokerdetError):
    """A folder is not laid out in a way smokerdet understands, or has no usable images."""


class DatasetNotFoundError(SmokerdetError):
    """No dataset was given and none was downloaded."""


class NoInputError(SmokerdetError):
    """The paths given hold no image to work on."""


class ImageLoadError(SmokerdetError):
    """One image could not be read. Batches report it and go on."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class UnknownArchError(SmokerdetError):
    """``--arch`` names no timm model."""


class WeightsError(SmokerdetError):
    """Pretrained or ``--weights`` weights cannot be had or do not fit the model."""


class ModelNotFoundError(SmokerdetError):
    """``--model`` names nothing that exists."""


class CheckpointError(SmokerdetError):
    """A model folder is incomplete, torn, or does not match its own metadata."""


class DownloadError(SmokerdetError):
    """A download or import failed."""


class Interrupted(SmokerdetError):
    """Ctrl-C. Exit code 130, as shells expect after SIGINT."""

    exit_code = 130


class VideoError(SmokerdetError):
    """One video file cannot be read: empty, not a video, no video stream, an unknown codec.

    Like :class:`ImageLoadError`, a batch reports it as the file's row and goes on.
    """

    def __init__(self, path: object, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint)
        self.path = path
        self.reason = reason


class UrlError(SmokerdetError):
    """A snapshot URL gave no image: unreachable, an HTTP error, too big, too slow, not an image.

    The message names the URL with its credentials redacted.
    """

    def __init__(self, url: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{url}: {reason}", hint)
        self.url = url
        self.reason = reason


class StreamError(SmokerdetError):
    """A live source (camera, stream, device) could not be opened, or never gave a frame."""
