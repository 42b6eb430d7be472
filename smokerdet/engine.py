"""Run a model: from its ONNX file with onnxruntime (no torch), or through torch.

:func:`open_engine` picks the backend. An ONNX engine imports neither torch nor timm, at
import or at run time: preprocessing is PIL + numpy (:mod:`smokerdet.images`), the TTA and the
class activation maps (CAM) are numpy. A torch engine wraps the torch model and computes
Grad-CAM for its heatmaps; with a global-average-pooled linear head both maps are the same.

Example:
    >>> from smokerdet.engine import open_engine
    >>> from smokerdet.images import load_image
    >>> engine = open_engine("default")  # doctest: +SKIP
    >>> engine.backend, engine.score([load_image("examples/smoking_0001.jpg")])  # doctest: +SKIP
    ('onnx', [0.97...])
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet.checkpoint import META_FILE, ModelMeta, matching_weights, read_meta, resolve_model
from smokerdet.errors import CheckpointError, ConfigError
from smokerdet.images import preprocess, view_of

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from smokerdet.checkpoint import LoadedModel
    from smokerdet.data import DataConfig

log = logging.getLogger("smokerdet")

#: The ONNX file ``smokerdet export`` writes into a model folder (same as export.ONNX_FILE,
#: repeated here so that this module never imports the torch-side exporter).
ONNX_FILE = "model.onnx"
FORMAT = "smokerdet-onnx/1"
BACKENDS = ("auto", "onnx", "torch")


class Engine:
    """A model ready to score images, whatever runs it.

    Attributes:
        name: the model's name (its folder name, or the ONNX file's stem).
        meta: its metadata (arch, data config, threshold, class names, TTA).
        backend: ``onnx`` or ``torch``.
        path: the ONNX file or the model folder it was loaded from.
    """

    name: str
    meta: ModelMeta
    backend: str
    path: Path

    def score_arrays(self, batch: np.ndarray) -> list[float]:
        """Probabilities for preprocessed ``(N, 3, S, S)`` float32 inputs, TTA applied."""
        raise NotImplementedError

    def maps_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Probabilities and raw class maps ``(N, h, w)`` (TTA-averaged, before ReLU)."""
        raise NotImplementedError

    def features_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Probabilities and pooled features ``(N, C)`` from the same forward pass.

        The features are the last feature map averaged over its grid (what the linear head
        sees); with flip TTA, the average over the photo and its mirror image, like the logit.
        """
        raise NotImplementedError

    def score_with_features(self, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """Probabilities and pooled feature vectors for RGB images (see features_arrays)."""
        if not images:
            return []
        probs, feats = self.features_arrays(self._stack(images))
        return list(zip(probs, feats, strict=True))

    def score(self, images: list[Image.Image]) -> list[float]:
        """Probabilities of smoking for RGB images, with the model's preprocessing and TTA."""
        if not images:
            return []
        return self.score_arrays(self._stack(images))

    def score_with_heatmaps(self, images: list[Image.Image]) -> list[tuple[float, np.ndarray]]:
        """Probabilities and heatmaps: each map is in [0, 1] on the image's own pixel grid."""
        if not images:
            return []
        probs, maps = self.maps_arrays(self._stack(images))
        cfg = self.meta.data_config
        return [
            (p, to_image_grid(normalise_cam(m), im.size, cfg))
            for p, m, im in zip(probs, maps, images, strict=True)
        ]

    def _stack(self, images: list[Image.Image]) -> np.ndarray:
        import numpy as np

        return np.stack([preprocess(im, self.meta.data_config) for im in images])


def sigmoid(logits: np.ndarray) -> list[float]:
    """Probabilities from logits, in float64 (as torch's sigmoid on float32 rounds them)."""
    import numpy as np

    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).tolist()


def normalise_cam(raw: np.ndarray) -> np.ndarray:
    """ReLU, then divide by the maximum: a map in [0, 1] (all zeros if nothing is positive)."""
    import numpy as np

    cam = np.maximum(raw.astype(np.float32), 0)
    top = float(cam.max(initial=0.0))
    return cam / top if top > 0 else cam


def to_image_grid(cam: np.ndarray, size: tuple[int, int], cfg: DataConfig) -> np.ndarray:
    """Map a model-grid heatmap back through the letterbox or crop onto the image's pixels."""
    import numpy as np
    from PIL import Image

    view = view_of(size, cfg)
    box = (max(1, round(view.width)), max(1, round(view.height)))
    scaled = Image.fromarray(cam.astype(np.float32), mode="F").resize(
        box, Image.Resampling.BILINEAR
    )
    canvas = Image.new("F", size, 0.0)
    canvas.paste(scaled, (round(view.left), round(view.top)))
    return np.clip(np.asarray(canvas, dtype=np.float32), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


class OnnxEngine(Engine):
    """An exported model run by onnxruntime on the CPU."""

    backend = "onnx"

    def __init__(self, path: Path, name: str, threads: int | None = None) -> None:
        self.path, self.name, self.threads = path, name, threads
        self.session: Any = _session(path, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = meta_from_props(props, path)
        self._check_graph()
        self.head = _cam_head(props, path)

    def _check_graph(self) -> None:
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or outputs[:2] != ["logit", "features"]:
            raise CheckpointError(
                f"{self.path}: the graph's inputs/outputs are not smokerdet's "
                f"(outputs {outputs}, want ['logit', 'features'])",
                hint="re-export the model with `smokerdet export`",
            )
        shape = list(inputs[0].shape)
        size = self.meta.data_config.input_size
        if len(shape) != 4 or shape[1:] != [3, size, size]:
            raise CheckpointError(
                f"{self.path}: input shape {shape} does not match field "
                f"'data_config.input_size' = {size} (want [batch, 3, {size}, {size}])",
                hint="re-export the model with `smokerdet export`",
            )

    def release(self) -> None:
        """Close the session (and its threads), e.g. before forking; reopened when used."""
        self.session = None

    def _run(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        import numpy as np

        if self.session is None:
            self.session = _session(self.path, self.threads)

        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.meta.tta == "hflip":
            # One run over the photos and their mirror images; averaged like the torch path.
            x = np.concatenate([x, np.ascontiguousarray(x[..., ::-1])])
        return self.session.run(outputs, {"input": x})

    def score_arrays(self, batch: np.ndarray) -> list[float]:
        (logits,) = self._run(batch, ["logit"])
        logits = logits.reshape(-1)
        if self.meta.tta == "hflip":
            n = len(batch)
            logits = (logits[:n] + logits[n:]) / 2
        return sigmoid(logits)

    def features_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        import numpy as np

        logits, features = self._run(batch, ["logit", "features"])
        logits = logits.reshape(-1)
        pooled = features.astype(np.float32).mean(axis=(2, 3))
        if self.meta.tta == "hflip":
            n = len(batch)
            logits = (logits[:n] + logits[n:]) / 2
            pooled = (pooled[:n] + pooled[n:]) / 2
        return sigmoid(logits), pooled

    def maps_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        import numpy as np

        if self.head is None:
            raise CheckpointError(
                f"{self.path}: no field 'cam_head' (the head is not pooled + linear), "
                "so heatmaps need torch",
                hint="use --backend torch for heatmaps with this model",
            )
        weight, _ = self.head
        logits, features = self._run(batch, ["logit", "features"])
        logits = logits.reshape(-1)
        maps = np.einsum("c,nchw->nhw", weight, features.astype(np.float32))
        if self.meta.tta == "hflip":
            n = len(batch)
            logits = (logits[:n] + logits[n:]) / 2
            maps = (maps[:n] + maps[n:, :, ::-1]) / 2
        return sigmoid(logits), maps


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # onnxruntime's warnings are not the user's business
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for every kind of bad file
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:200]
        raise CheckpointError(
            f"{path} is not a valid ONNX model (truncated or tampered?): {reason}",
            hint="re-export it with `smokerdet export`",
        ) from None


def meta_from_props(props: dict[str, str], path: Path) -> ModelMeta:
    """Read the metadata an exported file carries; errors name the file and the field."""
    if props.get("format") != FORMAT:
        found = props.get("format")
        raise CheckpointError(
            f"{path}: no smokerdet metadata (field 'format' is {found!r}, want {FORMAT!r})",
            hint="export the model with `smokerdet export`",
        )
    raw: dict[str, Any] = {}
    for key in ("arch", "weights_sha256"):
        raw[key] = props.get(key, "")
    try:
        for key in ("data_config", "class_names"):
            raw[key] = json.loads(props[key])
        raw["threshold"] = float(props["threshold"])
    except KeyError as e:
        raise CheckpointError(f"{path}: missing field {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: a metadata field is not valid ({e})") from None
    raw["tta"] = props.get("tta") or None
    raw["versions"] = {"smokerdet": props.get("smokerdet_version", "")}
    meta = ModelMeta.from_dict(raw, where=str(path))
    if len(meta.weights_sha256) != 64:
        raise CheckpointError(f"{path}: field 'weights_sha256' is missing or not a SHA-256")
    return meta


def _cam_head(props: dict[str, str], path: Path) -> tuple[np.ndarray, float] | None:
    import numpy as np

    if "cam_head" not in props:
        return None
    try:
        head = json.loads(props["cam_head"])
        weight = np.frombuffer(base64.b64decode(head["weight"]), dtype="<f4").astype(np.float32)
        return weight, float(head["bias"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path}: field 'cam_head' is not valid ({e})") from None


# ---------------------------------------------------------------------------------------------
# torch


class TorchEngine(Engine):
    """A model run by torch (any device); heatmaps by Grad-CAM."""

    backend = "torch"

    def __init__(self, loaded: LoadedModel, device: str) -> None:
        self.loaded, self.device = loaded, device
        self.name, self.meta, self.path = loaded.name, loaded.meta, loaded.path

    def score_arrays(self, batch: np.ndarray) -> list[float]:
        import torch

        from smokerdet.inference import forward_probs

        return forward_probs(self.loaded, torch.from_numpy(batch), self.device)

    def features_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        import torch

        from smokerdet.inference import forward_probs_features

        probs, pooled = forward_probs_features(self.loaded, torch.from_numpy(batch), self.device)
        return probs, pooled

    def maps_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        logits, maps = grad_cam(self.loaded.model, x)
        if self.meta.tta == "hflip":
            logits_f, maps_f = grad_cam(self.loaded.model, torch.flip(x, dims=[3]))
            logits, maps = (logits + logits_f) / 2, (maps + torch.flip(maps_f, dims=[2])) / 2
        return sigmoid(logits.cpu().numpy()), maps.cpu().numpy()


def grad_cam(model: Any, x: Any) -> tuple[Any, Any]:
    """Grad-CAM on the last feature map: (logits, maps before ReLU), scaled like CAM.

    The gradient of each logit with respect to the output of the last conv stage, averaged
    over the grid, weights that stage's channels. Images in an eval-mode batch are
    independent, so one backward pass over the sum gives every image's own gradient.
    """
    import torch

    with torch.enable_grad():
        features = model.forward_features(x).detach().requires_grad_(True)
        logits = model.forward_head(features).reshape(-1)
        (grads,) = torch.autograd.grad(logits.sum(), features)
    h, w = features.shape[-2:]
    # mean over the grid, times h*w, so the map has CAM's scale (the same after normalising)
    alpha = grads.mean(dim=(2, 3), keepdim=True) * (h * w)
    maps = (alpha * features.detach()).sum(dim=1)
    return logits.detach().float(), maps.float()


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
    from smokerdet.checkpoint import load_model
    from smokerdet.model import pick_device

    dev = pick_device(device)
    return TorchEngine(load_model(model, device=dev), dev)
