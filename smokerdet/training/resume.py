"""The resumable state of an interrupted training run: safetensors for the tensors, JSON for
the rest, no pickle.

It lives in ``<model folder>/resume/`` while a run trains: ``state.json`` names a tensors file
``state-EPOCH.safetensors`` and its SHA-256, so a torn pair is refused rather than used. What
goes into it is :func:`smokerdet.training.loop.write_resume_state`'s business; this module is the format.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smokerdet._io import atomic_write_bytes, atomic_write_json
from smokerdet.errors import CheckpointError, ModelNotFoundError
from smokerdet.models import META_FILE

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
