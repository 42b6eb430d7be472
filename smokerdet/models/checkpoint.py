"""Model folders: ``model.safetensors`` plus ``model.json``, written atomically, no pickle.

A model folder lives at ``<data dir>/models/<name>/``. ``model.json`` carries everything needed
to use the weights the way they were trained: architecture, preprocessing, threshold, class
names, the validation metrics, a fingerprint of the training data, and the SHA-256 of the
weights file, so a torn pair (new weights, old metadata) is detected instead of used.

Example:
    >>> from smokerdet.models.registry import load_model
    >>> loaded = load_model("default")  # doctest: +SKIP
    >>> loaded.meta.arch, loaded.meta.threshold  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smokerdet._io import atomic_write_bytes, atomic_write_json
from smokerdet.data import CLASS_NAMES, DataConfig
from smokerdet.errors import CheckpointError, ConfigError
from smokerdet.faults import point
from smokerdet.models.build import MAX_INPUT_SIZE, MIN_INPUT_SIZE
from smokerdet.paths import locks_dir

WEIGHTS_FILE = "model.safetensors"
PREVIOUS_WEIGHTS_FILE = "model.prev.safetensors"
META_FILE = "model.json"
FORMAT_VERSION = 1
RESERVED_NAMES = {"latest", "default"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ModelMeta:
    """Everything ``model.json`` records about a trained model."""

    arch: str
    data_config: DataConfig
    threshold: float = 0.5
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    tta: str | None = None
    val_metrics: dict[str, Any] = field(default_factory=dict)
    # ``smokerdet train --cv``: the cross-validated estimate (see smokerdet.crossval).
    cv_metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    train_args: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    weights_sha256: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_config"] = self.data_config.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = META_FILE) -> ModelMeta:
        """Validate and read ``model.json`` contents; errors name the offending field."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: not a JSON object")
        for key in ("arch", "data_config", "threshold", "weights_sha256"):
            if key not in d:
                raise CheckpointError(f"{where}: missing field {key!r}")
        arch = d["arch"]
        if not isinstance(arch, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", arch):
            raise CheckpointError(f"{where}: field 'arch' is not a model name: {arch!r}")
        dc = d["data_config"]
        if not isinstance(dc, dict):
            raise CheckpointError(f"{where}: field 'data_config' is not an object")
        try:
            cfg = DataConfig.from_dict(dc)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: field 'data_config' is invalid ({e})") from None
        if not MIN_INPUT_SIZE <= cfg.input_size <= MAX_INPUT_SIZE:
            raise CheckpointError(
                f"{where}: field 'data_config.input_size' = {cfg.input_size} is outside "
                f"{MIN_INPUT_SIZE}..{MAX_INPUT_SIZE}"
            )
        if len(cfg.mean) != 3 or len(cfg.std) != 3 or any(s <= 0 for s in cfg.std):
            raise CheckpointError(
                f"{where}: field 'data_config.mean/std' must be 3 values, std > 0"
            )
        if cfg.resize_mode not in ("letterbox", "crop", "squash"):
            raise CheckpointError(f"{where}: field 'data_config.resize_mode' is invalid")
        threshold = d["threshold"]
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise CheckpointError(f"{where}: field 'threshold' must be a number in [0, 1]")
        tta = d.get("tta")
        if tta not in (None, "hflip"):
            raise CheckpointError(f"{where}: field 'tta' must be null or 'hflip'")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["data_config"] = cfg
        kwargs["threshold"] = float(threshold)
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise CheckpointError(f"{where}: {e}") from None


@dataclass
class LoadedModel:
    """A model ready for inference, with its metadata and where it came from."""

    model: Any
    meta: ModelMeta
    path: Path
    name: str


def versions() -> dict[str, str]:
    """Versions of smokerdet, torch and timm, as recorded in checkpoints."""
    import timm
    import torch

    from smokerdet.__about__ import __version__

    return {"smokerdet": __version__, "torch": torch.__version__, "timm": timm.__version__}


def check_name(name: str) -> None:
    """Reject model names that are not a safe single folder name."""
    if name in RESERVED_NAMES or not _NAME_RE.match(name) or name in (".", ".."):
        raise ConfigError(
            f"--name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' and '-' (not 'latest' or 'default')",
        )


def lock_files(folder: Path) -> tuple[Path, Path]:
    """The lock of a model folder and the file naming its holder: ``NAME.lock`` and
    ``NAME.pid`` in :func:`~smokerdet.paths.locks_dir` (not beside the folder: the models
    folder holds models only, and removing a model leaves its lock alone)."""
    locks = locks_dir()
    return locks / f"{folder.name}.lock", locks / f"{folder.name}.pid"


@contextlib.contextmanager
def model_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on a model folder while one training run writes it.

    The operating system drops the lock when its process dies (a crash, SIGKILL), so a lock
    left behind never blocks the next run. While it is held, ``NAME.pid`` names the holder's
    process (see :func:`lock_holder`).

    Raises:
        ConfigError: another run holds the lock on this model name.
    """
    from filelock import FileLock, Timeout

    lock_file, pid_file = lock_files(folder)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"another training run is writing model {folder.name!r}",
            hint="wait for it to finish, or choose another --name",
        ) from None
    try:
        # filelock truncates the lock file and writes nothing into it: the id goes beside it,
        # renamed into place so no reader sees half a number (not fsynced: after a crash the
        # lock is free, and then the file means nothing).
        tmp = pid_file.with_name(f"{pid_file.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pid_file)
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def lock_holder(folder: Path) -> int | None:
    """Whether a live run holds ``folder``'s :func:`model_lock`: its process id, 0 when it has
    not written it yet, None when no run holds the lock.

    The lock itself answers, from any process: the operating system drops it with its holder,
    so a killed run's files left behind do not count.
    """
    from filelock import FileLock, Timeout

    lock_file, pid_file = lock_files(folder)
    if not lock_file.exists():
        return None
    probe = FileLock(lock_file, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        try:
            return int(pid_file.read_text())
        except (OSError, ValueError):
            return 0
    probe.release()
    return None


def save_model(folder: Path, model: Any, meta: ModelMeta, *, half: bool = False) -> Path:
    """Save weights and metadata into ``folder``, each file atomically, metadata last.

    Args:
        folder: the model folder (created).
        model: the torch module.
        meta: its metadata; ``weights_sha256`` and ``created`` are filled in here.
        half: store float tensors as fp16 (halves the size; used for the shipped model).
    """
    from safetensors.torch import save

    state = {}
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.half()
        state[k] = t.contiguous()
    blob = save(state, metadata={"format": "pt", "arch": meta.arch})
    meta.weights_sha256 = hashlib.sha256(blob).hexdigest()
    meta.created = meta.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    if not meta.versions:
        meta.versions = versions()
    current, previous = folder / WEIGHTS_FILE, folder / PREVIOUS_WEIGHTS_FILE
    try:
        # The old weights stay on disk, as model.prev.safetensors, until the new metadata is
        # in place: a kill at any moment leaves a folder that loads as the old or the new model.
        if _current_is_vouched_for(folder):
            os.replace(current, previous)
            point("save_model/previous-kept")
        atomic_write_bytes(current, blob)
        atomic_write_json(folder / META_FILE, meta.to_dict())
        previous.unlink(missing_ok=True)
    except OSError as e:
        if previous.exists() and not current.exists():
            os.replace(previous, current)
        raise CheckpointError(
            f"cannot save the model to {folder}: {e.strerror or e}; the previous files are kept",
            hint="free some disk space or check permissions",
        ) from None
    return folder


def _current_is_vouched_for(folder: Path) -> bool:
    """Whether ``model.safetensors`` is the file to keep as the previous weights during a save.

    After an interrupted save, ``model.json`` may vouch for ``model.prev.safetensors`` while
    ``model.safetensors`` holds the unfinished save's weights: setting those aside would
    overwrite the only weights the metadata matches, and a second kill would tear the folder.
    """
    current, previous = folder / WEIGHTS_FILE, folder / PREVIOUS_WEIGHTS_FILE
    if not current.exists() or not (folder / META_FILE).exists():
        return False
    if not previous.exists():
        return True
    try:
        vouched, _ = matching_weights(folder, read_meta(folder).weights_sha256)
    except CheckpointError:
        return True  # nothing loads either way: keep the newer file, as without a leftover
    return vouched == current


def read_meta(folder: Path) -> ModelMeta:
    """Read and validate ``model.json`` of a model folder."""
    meta_path = folder / META_FILE
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder} has no {META_FILE}", hint="is this a smokerdet model folder?"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e})") from None
    return ModelMeta.from_dict(raw, where=str(meta_path))


def matching_weights(folder: Path, sha256: str) -> tuple[Path, bytes]:
    """The weights file whose SHA-256 is the one ``model.json`` records.

    ``model.prev.safetensors`` counts too: it is what a save interrupted between writing the
    new weights and the new metadata leaves behind.
    """
    found = False
    for name in (WEIGHTS_FILE, PREVIOUS_WEIGHTS_FILE):
        path = folder / name
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            continue
        found = True
        if hashlib.sha256(blob).hexdigest() == sha256:
            return path, blob
    if not found:
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}")
    raise CheckpointError(
        f"{folder / WEIGHTS_FILE} does not match the weights_sha256 in {META_FILE}: "
        "the folder is torn or was edited",
        hint="retrain the model or restore both files together",
    )
