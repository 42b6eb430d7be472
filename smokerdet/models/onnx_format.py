"""The metadata an exported ``.onnx`` file carries, written by export and read by the ONNX backend.

The values of ``metadata_props`` are strings: binary payloads (the CAM head, the familiarity
stats and rehearsal rows of :mod:`smokerdet.models.sidecars`) are base64-encoded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet.errors import CheckpointError
from smokerdet.models.checkpoint import ModelMeta

if TYPE_CHECKING:
    import numpy as np


#: The ONNX file ``smokerdet export`` writes into a model folder (same as export.ONNX_FILE,
#: repeated here so that this module never imports the torch-side exporter).
ONNX_FILE = "model.onnx"
FORMAT = "smokerdet-onnx/1"


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


def read_props(blob: bytes) -> dict[str, str]:
    """The ``metadata_props`` of a serialised ONNX model (onnx, not onnxruntime: no session).

    Raises:
        ValueError: ``blob`` is not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_from_string(blob)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ValueError(f"not an ONNX model ({type(e).__name__})") from None
    return {p.key: p.value for p in proto.metadata_props}


def with_props(blob: bytes, props: dict[str, str]) -> bytes:
    """A serialised ONNX model with its ``metadata_props`` replaced by ``props``; the graph and
    its weights are copied unchanged."""
    import onnx

    proto = onnx.load_from_string(blob)
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()
