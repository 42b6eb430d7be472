"""What ``smokerdet info`` reports: versions, device, data dir, models, the active model."""

from __future__ import annotations

from typing import Any

from smokerdet.checkpoint import resolve_model, trained_models, versions
from smokerdet.errors import ModelNotFoundError
from smokerdet.model import pick_device
from smokerdet.paths import HOME_ENV, data_dir, datasets_dir, models_dir, weights_dir


def gather_info() -> dict[str, Any]:
    """Versions, device, data dir and its subfolders, trained models and the active model.

    Example:
        >>> from smokerdet.info import gather_info
        >>> sorted(gather_info())  # doctest: +SKIP
        ['active_model', 'data_dir', 'device', 'folders', 'models', 'versions']
    """
    import os

    models = [
        {
            "name": name,
            "path": str(folder),
            "arch": meta.arch if meta else None,
            "created": meta.created if meta else None,
            "val_f1": (meta.val_metrics or {}).get("f1") if meta else None,
            "valid": meta is not None,
        }
        for name, folder, meta in trained_models()
    ]
    try:
        name, folder = resolve_model(None)
        active: dict[str, Any] | None = {"name": name, "path": str(folder)}
    except ModelNotFoundError:
        active = None
    return {
        "versions": versions(),
        "device": pick_device("auto"),
        "data_dir": str(data_dir()),
        "data_dir_from": HOME_ENV if os.environ.get(HOME_ENV) else "platformdirs",
        "folders": {
            "datasets": {"path": str(datasets_dir()), "exists": datasets_dir().is_dir()},
            "weights": {"path": str(weights_dir()), "exists": weights_dir().is_dir()},
            "models": {"path": str(models_dir()), "exists": models_dir().is_dir()},
        },
        "models": models,
        "active_model": active,
    }
