"""The resumable state of a training run: what goes into it, and its format (safetensors for
the tensors, JSON for the rest, no pickle).

It lives in ``<model folder>/resume/`` while a run trains, written after every epoch (the last
one too, so that a run killed while it writes its final files can finish them on resume) and
removed once the run is complete: a model folder without it is finished. ``state.json`` names a
tensors file ``state-EPOCH.safetensors`` and its SHA-256, so a torn pair is refused rather than
used.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet._io import atomic_write_bytes, atomic_write_json
from smokerdet.errors import CheckpointError, ModelNotFoundError
from smokerdet.models import META_FILE
from smokerdet.training.report import EpochStats

if TYPE_CHECKING:
    from smokerdet.training.state import LoopState

#: Where the resumable state lives inside a model folder while training runs.
RESUME_DIR = "resume"
FORMAT_VERSION = 1


@dataclass
class ResumeState:
    """A resumable state as read from disk."""

    json: dict[str, Any]
    tensors: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The last epoch that finished before the interruption."""
        return int(self.json["epoch"])


def write_resume_files(folder: Path, info: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Atomically write ``info`` (with an ``epoch``) and CPU ``tensors`` as the resumable state.

    Raises:
        CheckpointError: the files cannot be written; the previous state is kept.
    """
    from safetensors.torch import save

    blob = save(tensors)
    tensors_file = f"state-{int(info['epoch']):04d}.safetensors"
    info = {
        "format_version": FORMAT_VERSION,
        **info,
        "tensors_file": tensors_file,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
    }
    # New tensors under a new name, then the JSON that points at them, then the old tensors
    # go: whenever a kill lands, state.json names a complete file.
    target = folder / RESUME_DIR
    try:
        atomic_write_bytes(target / tensors_file, blob)
        atomic_write_json(target / "state.json", info)
    except OSError as e:
        raise CheckpointError(
            f"cannot save the resumable state to {target}: {e.strerror or e}; the previous "
            "epoch's state is kept",
            hint="free some disk space or check permissions",
        ) from None
    for old in target.glob("state-*.safetensors"):
        if old.name != tensors_file:
            old.unlink(missing_ok=True)


def read_resume_state(folder: Path) -> ResumeState:
    """Read and check a resumable state; the JSON names the tensors file's SHA-256."""
    from safetensors.torch import load

    path = folder / RESUME_DIR / "state.json"
    if not path.is_file():
        done = (folder / META_FILE).is_file()
        raise ModelNotFoundError(
            f"nothing to resume for {folder.name!r}"
            + (": its training finished" if done else ": no such interrupted run"),
            hint="list models with `smokerdet info`",
        )
    try:
        info = json.loads(path.read_text())
        name = str(info.get("tensors_file", ""))
        if not re.fullmatch(r"state-\d{4}\.safetensors", name):
            raise ValueError(f"bad tensors_file {name!r}")
        blob = (folder / RESUME_DIR / name).read_bytes()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"resume state of {folder.name!r} is unreadable ({e})") from None
    if hashlib.sha256(blob).hexdigest() != info.get("tensors_sha256"):
        raise CheckpointError(
            f"resume state of {folder.name!r} is torn (tensors do not match state.json)"
        )
    return ResumeState(json=info, tensors=load(blob))


# ---------------------------------------------------------------------------------------------
# What goes into it


def _cpu(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def _load_prefixed(module: Any, tensors: dict[str, Any], prefix: str) -> None:
    module.load_state_dict(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    )


def write_resume_state(state: LoopState) -> None:
    """Atomically write everything needed to continue after ``state.epoch``."""
    tensors = _cpu(state.model.state_dict(), "model.")
    if state.ema is not None:
        tensors.update(_cpu(state.ema.state_dict(), "ema."))
    opt = state.optimizer.state_dict()
    for pid, st in opt["state"].items():
        tensors.update(_cpu(st, f"opt.{pid}."))
    info = {
        "epoch": state.epoch,
        "config": state.cfg.to_dict(),
        "meta": state.meta.to_dict(),
        "optimizer_param_groups": opt["param_groups"],
        "scheduler": {k: v for k, v in state.scheduler.state_dict().items() if k != "lr_lambdas"},
        "best": list(state.best) if state.best else None,
        "best_epoch": state.best_epoch,
        "stale": state.stale,
        "stopped_early": state.stopped_early,
        "history": [asdict(h) for h in state.history],
    }
    write_resume_files(state.folder, info, tensors)


def restore_model(model: Any, saved: ResumeState) -> None:
    """The weights of the interrupted run, as they were after its last finished epoch."""
    _load_prefixed(model, saved.tensors, "model.")


def restore_progress(state: LoopState, saved: ResumeState) -> None:
    """The epoch count, history and early-stopping record of the interrupted run."""
    state.epoch = saved.epoch
    state.history = [EpochStats(**h) for h in saved.json["history"]]
    best = saved.json["best"]
    state.best = (float(best[0]), float(best[1])) if best else None
    state.best_epoch, state.stale = saved.json["best_epoch"], saved.json["stale"]
    state.stopped_early = bool(saved.json.get("stopped_early", False))


def restore_phase(state: LoopState, saved: ResumeState) -> None:
    """The optimiser, schedule and EMA of the phase the run was interrupted in."""
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in saved.tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    state.optimizer.load_state_dict(
        {"state": opt_state, "param_groups": saved.json["optimizer_param_groups"]}
    )
    state.scheduler.load_state_dict({**saved.json["scheduler"], "lr_lambdas": [None]})
    if state.ema is not None:
        _load_prefixed(state.ema, saved.tensors, "ema.")
