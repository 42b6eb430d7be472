"""Choosing and opening a backend for a model: :func:`open_engine`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from smokerdet.config import BACKENDS
from smokerdet.errors import CheckpointError, ConfigError
from smokerdet.inference.onnx_backend import OnnxEngine
from smokerdet.inference.torch_backend import TorchEngine
from smokerdet.models import META_FILE, ONNX_FILE, matching_weights, read_meta, resolve_model

log = logging.getLogger("smokerdet")

if TYPE_CHECKING:
    from smokerdet.inference.engine import Engine


# ---------------------------------------------------------------------------------------------
# Choosing the backend


def _onnx_spec(model: str | os.PathLike[str] | None) -> Path | None:
    if model is None:
        return None
    path = Path(model).expanduser()
    return path if path.suffix.lower() == ".onnx" and not path.is_dir() else None


def _check_folder(onnx: OnnxEngine, folder: Path) -> None:
    """An ONNX file in a model folder must come from that folder's weights, and the folder
    must be whole: a torn folder is refused on every backend, not only on torch."""
    if not (folder / META_FILE).is_file():
        return
    recorded = read_meta(folder).weights_sha256
    matching_weights(folder, recorded)
    if onnx.meta.weights_sha256 != recorded:
        raise CheckpointError(
            f"{onnx.path}: field 'weights_sha256' ({onnx.meta.weights_sha256[:12]}...) does "
            f"not match the weights of {folder} ({recorded[:12]}...): the ONNX file is stale",
            hint="re-export it with `smokerdet export`, or use --backend torch",
        )


def open_engine(
    model: str | os.PathLike[str] | None = None,
    *,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
) -> Engine:
    """Open a model for scoring, through ONNX Runtime when it can, else torch.

    ``auto`` takes ONNX when the model is an ``.onnx`` file or its folder holds
    ``model.onnx`` and the device is ``auto`` or ``cpu`` (a GPU stays on torch); otherwise
    torch, saying so in one line on the ``smokerdet`` logger.

    Args:
        model: a model name, folder, ``.onnx`` file, ``latest`` or ``default``.
        backend: ``auto``, ``onnx`` or ``torch`` (``--backend``).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (``--device``); ONNX runs on the CPU.
        threads: onnxruntime intra-op threads (default: one per core).

    Raises:
        ConfigError: an unknown backend, or ONNX asked for on a GPU.
        ModelNotFoundError, CheckpointError: no usable model, or a bad/stale ONNX file.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be auto, onnx or torch, not {backend!r}")
    if backend == "onnx" and device not in ("auto", "cpu"):
        raise ConfigError(f"--backend onnx runs on the CPU; it cannot use --device {device}")
    onnx_file = _onnx_spec(model)
    if onnx_file is not None:
        if backend == "torch":
            raise ConfigError(
                f"--backend torch needs a model folder, not the ONNX file {onnx_file}",
                hint="pass the model folder with --model, or drop --backend torch",
            )
        if not onnx_file.is_file():
            raise CheckpointError(f"{onnx_file}: no such ONNX file", hint="check --model")
        folder = onnx_file.parent
        name = folder.name if (folder / META_FILE).is_file() else onnx_file.stem
        engine = OnnxEngine(onnx_file, name, threads)
        _check_folder(engine, folder)
        return engine
    name, folder = resolve_model(model)
    candidate = folder / ONNX_FILE
    if backend == "onnx" or (backend == "auto" and device in ("auto", "cpu")):
        if candidate.is_file():
            engine = OnnxEngine(candidate, name, threads)
            _check_folder(engine, folder)
            return engine
        if backend == "onnx":
            raise CheckpointError(
                f"{folder} has no {ONNX_FILE} for --backend onnx",
                hint=f"run `smokerdet export {name}` first, or use --backend torch",
            )
        log.warning("%s has no %s: scoring through torch (slower to start)", name, ONNX_FILE)
    return _torch_engine(model if model is not None else folder, device)


def _torch_engine(model: str | os.PathLike[str], device: str) -> TorchEngine:
    import torch

    from smokerdet.models import load_model, pick_device

    dev = pick_device(device)
    loaded = load_model(model, device=dev)
    if dev == "cpu":  # the layout the CPU kernels run fastest; the engine's inputs match it
        loaded.model.to(memory_format=torch.channels_last)
    return TorchEngine(loaded, dev)
