"""The models on this machine: list them, choose the one that answers by default, remove one.

``predict``, ``eval`` and ``serve`` use the model shipped in the package unless ``--model``
names another or the user has chosen a default here. The choice is one small JSON file in the
data dir (:func:`smokerdet.paths.default_choice_file`); training never changes it.

Example:
    >>> from smokerdet.models import list_models, set_default, reset_default
    >>> [m.name for m in list_models()]  # doctest: +SKIP
    ['default', 'resnet18-20260101-120000']
    >>> set_default("resnet18-20260101-120000").is_default  # doctest: +SKIP
    True
    >>> reset_default().name  # doctest: +SKIP
    'default'
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smokerdet.checkpoint import (
    ModelMeta,
    atomic_write_json,
    chosen_default,
    default_model_available,
    read_meta,
    trained_models,
)
from smokerdet.errors import CheckpointError, ConfigError, ModelNotFoundError
from smokerdet.paths import default_choice_file, default_model_dir, models_dir

#: The name under which the model shipped in the package is listed (and given to ``--model``).
SHIPPED_NAME = "default"


@dataclass
class ModelInfo:
    """One model as ``smokerdet models list`` shows it.

    Attributes:
        name: what ``--model`` takes (``default`` for the shipped model).
        path: the model folder.
        arch: the timm architecture, None when ``model.json`` is unreadable.
        created: when it was saved (ISO 8601, UTC), "" when unknown.
        val_metrics: its validation metrics as recorded at training time.
        threshold: its decision threshold, None when unreadable.
        is_default: True for the model that answers when no ``--model`` is given.
        is_shipped: True for the model shipped inside the package.
        problem: why ``model.json`` could not be read, None when it could.
    """

    name: str
    path: Path
    arch: str | None
    created: str
    val_metrics: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    is_default: bool = False
    is_shipped: bool = False
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _info(
    name: str, folder: Path, meta: ModelMeta | None, default: str | None, problem: str | None
) -> ModelInfo:
    return ModelInfo(
        name=name,
        path=folder,
        arch=meta.arch if meta else None,
        created=meta.created if meta else "",
        val_metrics=dict(meta.val_metrics) if meta else {},
        threshold=meta.threshold if meta else None,
        is_default=name == default,
        is_shipped=name == SHIPPED_NAME and folder == default_model_dir(),
        problem=problem,
    )


def _current_default() -> str | None:
    """Name of the model answering by default; None when the choice is broken or missing."""
    try:
        choice = chosen_default()
    except ModelNotFoundError:
        return None
    if choice is not None:
        return choice
    return SHIPPED_NAME if default_model_available() else None


def list_models() -> list[ModelInfo]:
    """Every model: the shipped one first, then the trained ones, oldest first."""
    default = _current_default()
    found: list[ModelInfo] = []
    if default_model_available():
        try:
            meta: ModelMeta | None = read_meta(default_model_dir())
            problem = None
        except CheckpointError as e:
            meta, problem = None, e.message
        found.append(_info(SHIPPED_NAME, default_model_dir(), meta, default, problem))
    for name, folder, trained_meta in trained_models():
        problem = None if trained_meta else "model.json is unreadable or invalid"
        found.append(_info(name, folder, trained_meta, default, problem))
    return found


def _find(name: str) -> ModelInfo:
    for info in list_models():
        if info.name == name:
            return info
    names = ", ".join(m.name for m in list_models()) or "none"
    raise ModelNotFoundError(
        f"no model named {name!r}",
        hint=f"known models: {names} (see `smokerdet models list`)",
    )


def set_default(name: str) -> ModelInfo:
    """Make ``name`` the model that answers when no ``--model`` is given.

    ``default`` goes back to the shipped model (same as :func:`reset_default`).

    Raises:
        ModelNotFoundError: no model has that name.
        CheckpointError: its ``model.json`` is unreadable, so it could not answer.
    """
    if name == SHIPPED_NAME:
        return reset_default()
    info = _find(name)
    if info.problem:
        raise CheckpointError(
            f"model {name!r} cannot be the default: {info.problem}",
            hint=f"retrain it, or remove it with `smokerdet models remove {name}`",
        )
    chosen = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(default_choice_file(), {"model": name, "chosen": chosen})
    info.is_default = True
    return info


def reset_default() -> ModelInfo:
    """Go back to the shipped model answering by default; returns it.

    Raises:
        ModelNotFoundError: this installation ships no model (the choice is cleared anyway).
    """
    default_choice_file().unlink(missing_ok=True)
    if not default_model_available():
        raise ModelNotFoundError(
            "the default choice is cleared, but this installation ships no model",
            hint="pass --model NAME|PATH, or choose one with `smokerdet models default NAME`",
        )
    return _find(SHIPPED_NAME)


def _training_pid(name: str) -> int | None:
    """PID of a live training run holding the model's lock (see ``train.ModelLock``)."""
    lock = models_dir() / f".{name}.lock"
    try:
        pid = int(lock.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def remove_model(name: str) -> ModelInfo:
    """Delete a trained model's folder; returns what it was.

    The folder is first renamed to a hidden name in the same folder (one atomic step, after
    which no command sees the model), then deleted. When it was the chosen default, the choice
    goes back to the shipped model: ``is_default`` in the result says so.

    Raises:
        ConfigError: ``name`` is the shipped model, or a training run is writing it.
        ModelNotFoundError: no trained model has that name.
        CheckpointError: the folder could not be renamed or deleted.
    """
    if name == SHIPPED_NAME:
        raise ConfigError(
            "the shipped model 'default' cannot be removed",
            hint="it is part of the package; remove a trained model by its name "
            "(see `smokerdet models list`)",
        )
    info = _find(name)
    pid = _training_pid(name)
    if pid is not None:
        raise ConfigError(
            f"a training run (pid {pid}) is writing model {name!r}",
            hint="wait for it to finish or stop it, then remove the model",
        )
    trash = info.path.with_name(f".removing-{name}-{os.getpid()}")
    try:
        os.replace(info.path, trash)
    except OSError as e:
        raise CheckpointError(
            f"cannot remove {info.path}: {e.strerror or e}", hint="check the folder's permissions"
        ) from None
    if info.is_default:
        with contextlib.suppress(FileNotFoundError):
            default_choice_file().unlink()
    try:
        shutil.rmtree(trash)
    except OSError as e:
        raise CheckpointError(
            f"model {name!r} is removed, but its files could not all be deleted: {e.strerror or e}",
            hint=f"delete {trash} by hand",
        ) from None
    return info
