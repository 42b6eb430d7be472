"""The models on this machine: list them, choose the one that answers by default, remove one.

``predict``, ``eval`` and ``serve`` use the model shipped in the package unless ``--model``
names another or the user has chosen a default here. The choice is one small JSON file in the
data dir (:func:`smokerdet.paths.default_choice_file`); training never changes it.

Example:
    >>> from smokerdet.models.registry import list_models, set_default, reset_default
    >>> [m.name for m in list_models()]  # doctest: +SKIP
    ['default', 'resnet18-20260101-120000']
    >>> set_default("resnet18-20260101-120000").is_default  # doctest: +SKIP
    True
    >>> reset_default().name  # doctest: +SKIP
    'default'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smokerdet._io import atomic_write_json
from smokerdet.errors import CheckpointError, ConfigError, ModelNotFoundError
from smokerdet.models.checkpoint import (
    _NAME_RE,
    META_FILE,
    LoadedModel,
    ModelMeta,
    lock_holder,
    matching_weights,
    read_meta,
)
from smokerdet.models.sidecars import familiarity_in
from smokerdet.paths import default_choice_file, default_model_dir, models_dir


def trained_models() -> list[tuple[str, Path, ModelMeta | None]]:
    """Models in the data dir, oldest first: (name, folder, meta or None if unreadable)."""
    root = models_dir()
    if not root.is_dir():
        return []
    found: list[tuple[str, Path, ModelMeta | None]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / META_FILE).exists():
            continue
        try:
            meta: ModelMeta | None = read_meta(folder)
        except CheckpointError:
            meta = None
        found.append((folder.name, folder, meta))
    found.sort(key=lambda t: (t[2].created if t[2] else "", t[0]))
    return found


def default_model_available() -> bool:
    """True when the package ships a default model."""
    return (default_model_dir() / META_FILE).is_file()


def chosen_default() -> str | None:
    """The model name chosen with ``smokerdet models default NAME``, or None for the shipped one.

    Raises:
        ModelNotFoundError: the file recording the choice is unreadable; no model is guessed.
    """
    path = default_choice_file()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelNotFoundError(
            f"cannot read the default model choice in {path} ({e})",
            hint="go back to the shipped model with `smokerdet models default --reset`",
        ) from None
    name = raw.get("model") if isinstance(raw, dict) else None
    if name is None:
        return None
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelNotFoundError(
            f"{path} names no valid model: {name!r}",
            hint="go back to the shipped model with `smokerdet models default --reset`",
        )
    return name


#: How a command takes a model folder's path, as the hint for an unknown model says it.
BY_PATH = "pass --model PATH to a model folder"


def _known_models_hint(how: str = BY_PATH) -> str:
    names = [n for n, _, meta in trained_models() if meta is not None]
    known = (["default (shipped)"] if default_model_available() else []) + names
    listing = f"known models: {', '.join(known)}; " if known else ""
    return f"{listing}see `smokerdet models list`, or {how}"


def resolve_model(
    spec: str | os.PathLike[str] | None = None, *, how: str = BY_PATH
) -> tuple[str, Path]:
    """Find a model folder: a path, a trained model's name, ``latest``, ``default``, or a
    model shared on the Hugging Face Hub, ``hf://ORG/NAME[@REVISION]`` (pulled into the cache
    and checked, see :mod:`smokerdet.models.share`).

    ``default`` is the model shipped in the package. With no ``spec``: the model chosen with
    ``smokerdet models default NAME``, else the shipped model. Training a model never changes
    which one answers. ``how`` ends the hint for an unknown name: how this command takes a
    path instead (the default names ``--model``).
    """
    if spec is None:
        choice = chosen_default()
        if choice is not None:
            folder = models_dir() / choice
            if (folder / META_FILE).exists():
                return choice, folder
            raise ModelNotFoundError(
                f"the default model {choice!r} (chosen with `smokerdet models default`) "
                "no longer exists",
                hint="choose another with `smokerdet models default NAME`, or go back to the "
                "shipped model with `smokerdet models default --reset`",
            )
        if default_model_available():
            return "default", default_model_dir()
        raise ModelNotFoundError(
            "this installation ships no model and no default model is chosen",
            hint="pass --model NAME|PATH, or choose one with `smokerdet models default NAME` "
            "(see `smokerdet models list`)",
        )
    text = str(spec)
    from smokerdet.models.share import is_hf, pull

    if is_hf(text):
        return pull(text)
    if text == "latest":
        models = [m for m in trained_models() if m[2] is not None]
        if models:
            name, folder, _ = models[-1]
            return name, folder
        raise ModelNotFoundError(
            "no trained model found (latest)",
            hint="train one with `smokerdet train`, or use the shipped model: --model default",
        )
    if text == "default":
        if default_model_available():
            return "default", default_model_dir()
        raise ModelNotFoundError(
            "this installation ships no default model", hint=_known_models_hint(how)
        )
    path = Path(text).expanduser()
    if path.exists():
        folder = path.parent if path.is_file() else path
        return folder.name, folder
    folder = models_dir() / text
    if _NAME_RE.match(text) and (folder / META_FILE).exists():
        return text, folder
    raise ModelNotFoundError(f"no model named or at {text!r}", hint=_known_models_hint(how))


def name_stem(spec: str) -> str:
    """How a model spec starts the default name of a model trained from it (``--init``): the
    repo's name for ``hf://ORG/NAME@REV``, the folder's name for a path, else the spec."""
    from smokerdet.models.share import is_hf, parse_hf

    if is_hf(spec):
        return parse_hf(spec)[0].split("/")[1]
    return Path(spec).name if "/" in spec or os.sep in spec else spec


def load_model(spec: str | os.PathLike[str] | None = None, device: str = "cpu") -> LoadedModel:
    """Load a model folder for inference, checking weights against their metadata.

    Raises:
        ModelNotFoundError: nothing matches ``spec``.
        CheckpointError: the folder is incomplete, torn, or does not match its arch.
    """
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load

    name, folder = resolve_model(spec)
    meta = read_meta(folder)
    weights_path, blob = matching_weights(folder, meta.weights_sha256)
    if not timm.is_model(meta.arch):
        raise CheckpointError(
            f"{folder / META_FILE}: field 'arch' names no timm model: {meta.arch!r}"
        )
    try:
        state = load(blob)
    except SafetensorError as e:
        raise CheckpointError(f"{weights_path} is not a valid safetensors file ({e})") from None
    model = timm.create_model(meta.arch, pretrained=False, num_classes=1)
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in state:
            raise CheckpointError(f"{weights_path}: tensor {key} is missing for arch {meta.arch}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{weights_path}: tensor {key} has shape {tuple(state[key].shape)}, "
                f"{meta.arch} expects {tuple(tensor.shape)}"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{weights_path}: unexpected tensor {extra[0]} for arch {meta.arch}")
    model.load_state_dict(state)
    model.eval().to(device)
    return LoadedModel(model=model, meta=meta, path=folder, name=name)


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
        familiarity: True when it has familiarity stats of its weights (in its folder or its
            ONNX file), so its predictions say how familiar each photo looks.
        f1: its F1 as recorded at training time: on the validation split, else pooled
            out-of-fold (cross-validated, as the shipped and adapted models have); None when
            it has neither.
        f1_kind: where ``f1`` comes from: "validation", "cross-validated", or None.
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
    familiarity: bool = False
    f1: float | None = None
    f1_kind: str | None = None

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
        familiarity=meta is not None and familiarity_in(folder, meta),
        **_f1(meta),
    )


def _f1(meta: ModelMeta | None) -> dict[str, Any]:
    """A model's recorded F1 and its kind: validation first, else pooled out-of-fold."""
    if meta is not None and meta.val_metrics.get("f1") is not None:
        return {"f1": meta.val_metrics["f1"], "f1_kind": "validation"}
    pooled = (meta.cv_metrics.get("pooled_oof") or {}) if meta is not None else {}
    if pooled.get("f1") is not None:
        return {"f1": pooled["f1"], "f1_kind": "cross-validated"}
    return {"f1": None, "f1_kind": None}


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


def remove_model(name: str, *, default_too: bool = False) -> ModelInfo:
    """Delete a trained model's folder; returns what it was.

    The folder is first renamed to a hidden name in the same folder (one atomic step, after
    which no command sees the model), then deleted. When it was the chosen default, the choice
    goes back to the shipped model: ``is_default`` in the result says so.

    Args:
        name: the model's name.
        default_too: remove it even when it is the chosen default (the model that answers
            when no ``--model`` is given); without it, that is refused.

    Raises:
        ConfigError: ``name`` is the shipped model or (without ``default_too``) the chosen
            default, or a training run is writing it.
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
    if info.is_default and not default_too:
        raise ConfigError(
            f"model {name!r} answers when no --model is given (the default)",
            hint=f"pass --yes to remove it anyway: `smokerdet models remove {name} --yes` "
            "(the shipped model answers then)",
        )
    pid = lock_holder(info.path)  # the lock itself: no stale process id can fool it
    if pid is not None:
        raise ConfigError(
            f"a training run{f' (pid {pid})' if pid else ''} is writing model {name!r}",
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
