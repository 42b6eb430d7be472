"""Export a trained model to an fp32 ONNX file that predicts without torch.

The graph has two outputs: ``logit`` (one per image) and ``features``, the last feature map
before pooling, from which :mod:`smokerdet.engine` computes class activation maps. The file
carries the model's metadata in ONNX ``metadata_props`` (arch, data config, threshold, class
names, TTA, smokerdet version, the SHA-256 of the weights it was made from, and the linear
head used for heatmaps), and the folder's familiarity stats and rehearsal rows
(:mod:`smokerdet.models.sidecars`), so it is the whole model with nothing beside it.

Example:
    >>> from smokerdet.models.export import export_onnx
    >>> result = export_onnx("default", out="model.onnx")  # doctest: +SKIP
    >>> result.max_abs_diff < 1e-3  # doctest: +SKIP
    True
"""

from __future__ import annotations

import base64
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet.__about__ import __version__
from smokerdet._io import atomic_write_bytes
from smokerdet.errors import SmokerdetError
from smokerdet.models import sidecars
from smokerdet.models.onnx_format import FORMAT, ONNX_FILE, with_props
from smokerdet.models.registry import load_model

if TYPE_CHECKING:
    from smokerdet.models.checkpoint import LoadedModel, ModelMeta

#: Pinned so that a file exported today loads the same in every onnxruntime we support.
OPSET = 17
INPUT_NAME, LOGIT_NAME, FEATURES_NAME = "input", "logit", "features"


class ExportError(SmokerdetError):
    """A model could not be exported to ONNX, or the export disagrees with torch."""


@dataclass
class ExportConfig:
    """Options of ``smokerdet export``."""

    model: str | None = None
    """Model name, folder, 'latest' or 'default' (default: the active model)."""
    out: Path | None = None
    """ONNX file to write (default: model.onnx in the model's folder)."""
    refit_familiarity: Path | None = None
    """First fit the model's familiarity stats on the photos of dataset DIR (its train split
    described, its val split calibrating the cut; use the photos it was trained on) and write
    them into its folder; the exported file carries them."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        model: the model's name.
        arch: its timm architecture.
        max_abs_diff: largest |p_onnx - p_torch| over the check batch (probabilities).
        size_bytes: size of the file.
        heatmaps: whether the file carries a linear head, so CAM heatmaps work without torch.
        familiarity: whether it carries familiarity stats of its weights.
        familiarity_photos: the training photos those stats describe (0: none).
        rehearsal: whether it carries rehearsal rows for site adaptation.
        carried_bytes: what the familiarity stats, rehearsal rows and training photos add to
            ``size_bytes``.
        not_carried: why each file of the folder is not carried, by file name, as the rest of
            a sentence about it (``is missing``, ``is not valid (...)``, ``belongs to other
            weights (...)``).
        refitted: whether the familiarity stats were fitted anew first
            (``--refit-familiarity``).
    """

    path: Path
    model: str
    arch: str
    max_abs_diff: float
    size_bytes: int
    heatmaps: bool
    familiarity: bool = False
    familiarity_photos: int = 0
    rehearsal: bool = False
    carried_bytes: int = 0
    not_carried: dict[str, str] = field(default_factory=dict)
    refitted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the path as a string)."""
        return {**asdict(self), "path": str(self.path)}


def _two_outputs(model: Any) -> Any:
    """Wrap a timm model so that the graph returns (logit, last feature map)."""
    import torch

    class TwoOutputs(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> tuple[Any, Any]:
            features = self.inner.forward_features(x)
            return self.inner.forward_head(features).reshape(-1), features

    return TwoOutputs(model).eval()


def cam_head(model: Any) -> dict[str, Any] | None:
    """The head as CAM needs it (weights of a linear layer after global average pooling).

    None when the head is anything else: heatmaps then need torch (Grad-CAM).
    """
    import torch

    head = model.get_classifier()
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", None)
    if not isinstance(head, torch.nn.Linear) or pool_type != "avg" or head.out_features != 1:
        return None
    weight = head.weight.detach().float().cpu().numpy().reshape(-1)
    bias = float(head.bias.detach().float().cpu()) if head.bias is not None else 0.0
    return {"weight": base64.b64encode(weight.astype("<f4").tobytes()).decode(), "bias": bias}


def metadata_for(meta: ModelMeta, head: dict[str, Any] | None) -> dict[str, str]:
    """The ``metadata_props`` an exported file carries (all values are strings)."""
    props = {
        "format": FORMAT,
        "smokerdet_version": __version__,
        "arch": meta.arch,
        "data_config": json.dumps(meta.data_config.to_dict()),
        "threshold": repr(meta.threshold),
        "class_names": json.dumps(meta.class_names),
        "tta": meta.tta or "",
        "weights_sha256": meta.weights_sha256,
    }
    if head is not None:
        props["cam_head"] = json.dumps(head)
    return props


def _to_onnx_bytes(wrapper: Any, size: int, name: str) -> bytes:
    import torch

    buf = io.BytesIO()
    dummy = torch.zeros(2, 3, size, size)
    axes = {INPUT_NAME: {0: "batch"}, LOGIT_NAME: {0: "batch"}, FEATURES_NAME: {0: "batch"}}
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # dynamo=False is deliberate (measured exact and fast here): not the user's concern
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (dummy,),
                buf,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[LOGIT_NAME, FEATURES_NAME],
                dynamic_axes=axes,
            )
    except Exception as e:  # the exporter raises many types for unsupported operators
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:300]
        raise ExportError(
            f"architecture {name!r} cannot be exported to ONNX ({reason})",
            hint="predict and eval still work with this model through torch (--backend torch)",
        ) from None
    return buf.getvalue()


def _check_against_torch(loaded: LoadedModel, blob: bytes) -> float:
    """Largest |p_onnx - p_torch| on a small seeded batch, TTA left out (same graph)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    size = loaded.meta.data_config.input_size
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, size, size)))
    x = x.float()
    with torch.inference_mode():
        p_torch = torch.sigmoid(loaded.model(x).float().reshape(-1)).numpy()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    logit = session.run([LOGIT_NAME], {INPUT_NAME: x.numpy()})[0].reshape(-1)
    p_onnx = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    return float(np.abs(p_onnx - p_torch).max())


def _photos(header: dict[str, str]) -> int:
    try:
        return int(header.get("n_train", 0))
    except ValueError:  # a header of the right weights, its count garbled: the stats say so
        return 0


def export_onnx(
    model: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    tolerance: float = 1e-3,
) -> ExportResult:
    """Export a trained model to an fp32 ONNX file with its metadata, checked against torch.

    The file also carries the familiarity stats and rehearsal rows of the model's folder that
    belong to its weights (:mod:`smokerdet.models.sidecars`); the result says which, and why
    any other is left out.

    Args:
        model: a model name, path, ``latest`` or ``default`` (as ``--model`` takes).
        out: the ONNX file to write; default ``model.onnx`` in the model's folder.
        tolerance: the largest |p_onnx - p_torch| accepted.

    Raises:
        ModelNotFoundError, CheckpointError: no usable model.
        ExportError: the architecture cannot be exported, or the file disagrees with torch.
    """
    loaded = load_model(model, device="cpu")
    target = Path(out) if out is not None else loaded.path / ONNX_FILE
    if target.is_dir():
        raise ExportError(f"--out {target} is a folder", hint="give a file name ending in .onnx")
    head = cam_head(loaded.model)
    size = loaded.meta.data_config.input_size
    blob = _to_onnx_bytes(_two_outputs(loaded.model), size, loaded.meta.arch)
    found = sidecars.carried(loaded.path, loaded.meta)
    blob = with_props(blob, {**metadata_for(loaded.meta, head), **found.props})
    diff = _check_against_torch(loaded, blob)
    if not diff <= tolerance:
        raise ExportError(
            f"the ONNX export of {loaded.meta.arch!r} disagrees with torch: "
            f"max |dp| = {diff:.2e} > {tolerance:g}",
            hint="use this model through torch (--backend torch)",
        )
    try:
        atomic_write_bytes(target, blob)
    except OSError as e:
        raise ExportError(f"cannot write {target}: {e.strerror or e}", hint="check --out") from None
    return ExportResult(
        path=target,
        model=loaded.name,
        arch=loaded.meta.arch,
        max_abs_diff=diff,
        size_bytes=len(blob),
        heatmaps=head is not None,
        familiarity=sidecars.FAMILIARITY_FILE in found.headers,
        familiarity_photos=_photos(found.headers.get(sidecars.FAMILIARITY_FILE, {})),
        rehearsal=sidecars.REHEARSAL_FILE in found.headers,
        carried_bytes=sum(len(k) + len(v) for k, v in found.props.items()),
        not_carried=found.problems,
    )
