"""What every command's options share: help text from field docstrings, common checks, choices.

Each command has one config dataclass in its application package (``training.config``,
``scoring.config``, ``serving.config``, ``models.export``). Each field's docstring is the ``--help`` text of its option (the CLI reads it with
:func:`field_help`), each default is the option's default, and ``__post_init__`` holds every
check, with messages that name the ``--flag``. The option of a field is its name with dashes
(``batch_size`` is ``--batch-size``). Nothing here imports torch.

Example:
    >>> from smokerdet.training.config import TrainConfig
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
import textwrap

from smokerdet.errors import ConfigError

#: Where a model can run (``--device``): ``auto`` picks the first available of the others.
DEVICES = ("auto", "cpu", "cuda", "mps")


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string right under it), as one line of help.

    Example:
        >>> from smokerdet.training.config import TrainConfig
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
    check_device(device)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}")


def check_device(device: str) -> None:
    """Refuse a ``--device`` that is not one of :data:`DEVICES` (whether it is available here is
    :func:`smokerdet.models.pick_device`'s question)."""
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
