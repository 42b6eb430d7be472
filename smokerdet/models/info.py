"""What ``smokerdet info`` reports: versions, device, data dir, models, the active model."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from smokerdet.errors import ModelNotFoundError
from smokerdet.models.build import pick_device
from smokerdet.models.checkpoint import versions
from smokerdet.models.registry import resolve_model, trained_models
from smokerdet.paths import HOME_ENV, data_dir, datasets_dir, models_dir, weights_dir


@dataclass
class Folder:
    """A subfolder of the data dir."""

    path: str
    exists: bool


@dataclass
class ModelEntry:
    """One trained model; ``arch`` and the rest are None when its ``model.json`` is unreadable."""

    name: str
    path: str
    arch: str | None
    created: str | None
    val_f1: float | None
    valid: bool


@dataclass
class ActiveModel:
    """The model ``predict`` and ``eval`` use when no ``--model`` is given."""

    name: str
    path: str


@dataclass
class Info:
    """Versions, device, data dir and its subfolders, trained models and the active model."""

    versions: dict[str, str]
    device: str
    data_dir: str
    data_dir_from: str
    folders: dict[str, Folder] = field(default_factory=dict)
    models: list[ModelEntry] = field(default_factory=list)
    active_model: ActiveModel | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def gather_info() -> Info:
    """Versions, device, data dir and its subfolders, trained models and the active model.

    Example:
        >>> from smokerdet.models.info import gather_info
        >>> gather_info().data_dir  # doctest: +SKIP
        '/home/me/.local/share/smokerdet'
    """
    models = [
        ModelEntry(
            name=name,
            path=str(folder),
            arch=meta.arch if meta else None,
            created=meta.created if meta else None,
            val_f1=(meta.val_metrics or {}).get("f1") if meta else None,
            valid=meta is not None,
        )
        for name, folder, meta in trained_models()
    ]
    try:
        name, folder = resolve_model(None)
        active: ActiveModel | None = ActiveModel(name, str(folder))
    except ModelNotFoundError:
        active = None
    return Info(
        versions=versions(),
        device=pick_device("auto"),
        data_dir=str(data_dir()),
        data_dir_from=HOME_ENV if os.environ.get(HOME_ENV) else "platformdirs",
        folders={
            "datasets": Folder(str(datasets_dir()), datasets_dir().is_dir()),
            "weights": Folder(str(weights_dir()), weights_dir().is_dir()),
            "models": Folder(str(models_dir()), models_dir().is_dir()),
        },
        models=models,
        active_model=active,
    )
