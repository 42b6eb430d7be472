"""Where a run starts: the model folder it claims (its name, checked free, locked), the
model whose weights it starts from, and (for a folder built aside) how it is put in place."""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet.errors import CheckpointError, ConfigError
from smokerdet.models import (
    check_arch,
    check_name,
    create_model,
    load_model,
    model_lock,
    name_stem,
    pretrained_provenance,
    resolve_data_config,
)
from smokerdet.paths import models_dir
from smokerdet.training.resume import read_resume_state

if TYPE_CHECKING:
    from smokerdet.data import DataConfig
    from smokerdet.training.config import TrainConfig


def run_name(cfg: TrainConfig) -> str:
    """``--name``, or the starting model's name or architecture with the time."""
    stem = name_stem(cfg.init) if cfg.init else cfg.arch
    return cfg.name or f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_free(name: str, overwrite: bool) -> Path:
    """The folder of model ``name``, refused when it exists and may not be replaced.

    Raises:
        ConfigError: a bad name, or a model of that name exists and ``overwrite`` is off.
    """
    check_name(name)
    folder = models_dir() / name
    if folder.exists() and not overwrite:
        raise ConfigError(
            f"a model named {name!r} already exists at {folder}",
            hint="choose another --name, or pass --overwrite to replace it",
        )
    return folder


def claim(name: str, stack: ExitStack, *, overwrite: bool = False, resume: bool = False) -> Path:
    """The folder of model ``name``, checked free (or resumable), with its lock held until
    ``stack`` closes.

    Raises:
        ConfigError: the name is bad or taken, or another run holds its lock.
        ModelNotFoundError, CheckpointError: ``resume`` and nothing usable to resume.
    """
    folder = check_free(name, overwrite or resume)
    if resume:
        read_resume_state(folder)  # says what is wrong before any rank starts
    stack.enter_context(model_lock(folder))
    return folder


def publish(built: Path, folder: Path) -> None:
    """Put the finished model folder ``built`` (a hidden sibling) in place as ``folder``.

    A model already there (``--overwrite``) is renamed aside first and deleted after: a kill
    leaves the old model or the new one, whole, or between the two renames neither (the old
    one then waits in a hidden folder beside them).

    Raises:
        CheckpointError: a folder could not be renamed.
    """
    aside = folder.with_name(f".{folder.name}.replaced-{os.getpid()}")
    try:
        if folder.exists():
            os.replace(folder, aside)
        os.replace(built, folder)
    except OSError as e:
        raise CheckpointError(
            f"cannot put model {folder.name!r} in place: {e.strerror or e}",
            hint=f"check the permissions of {folder.parent}",
        ) from None
    shutil.rmtree(aside, ignore_errors=True)


@dataclass
class Start:
    """The model to train, its preprocessing, and where its weights came from."""

    model: Any
    data_config: DataConfig
    origin: dict[str, Any]
    arch: str


def build_start(cfg: TrainConfig) -> Start:
    """The starting model as ``cfg`` asks: an ``--init`` model, or a timm model."""
    if cfg.init is not None:
        base = load_model(cfg.init)
        if cfg.arch != base.meta.arch:
            raise ConfigError(
                f"--arch {cfg.arch} differs from the --init model's {base.meta.arch}",
                hint="leave --arch out: --init keeps the model's own architecture",
            )
        if cfg.img_size is not None and cfg.img_size != base.meta.data_config.input_size:
            raise ConfigError(
                f"--img-size {cfg.img_size} differs from the --init model's "
                f"{base.meta.data_config.input_size}",
                hint="leave --img-size out: --init keeps the model's own preprocessing",
            )
        origin = {"init": base.name, "init_path": str(base.path), "arch": base.meta.arch}
        return Start(base.model.float(), base.meta.data_config, origin, base.meta.arch)
    assert cfg.arch is not None  # TrainConfig settles it
    check_arch(cfg.arch)
    pretrained = cfg.pretrained and cfg.weights is None
    model = create_model(cfg.arch, pretrained=pretrained, weights=cfg.weights)
    origin = (
        pretrained_provenance(cfg.arch)
        if pretrained
        else {"weights": str(cfg.weights) if cfg.weights else None}
    )
    return Start(model, resolve_data_config(model, cfg.img_size), origin, cfg.arch)
