"""The ONNX Runtime backend: the forward pass of an exported model, no torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet.errors import CheckpointError
from smokerdet.inference.engine import Engine
from smokerdet.models.onnx_format import _cam_head, meta_from_props

if TYPE_CHECKING:
    import numpy as np


class OnnxEngine(Engine):
    """An exported model run by onnxruntime on the CPU."""

    backend = "onnx"

    def __init__(self, path: Path, name: str, threads: int | None = None) -> None:
        self.path, self.name, self.threads = path, name, threads
        self.session: Any = _session(path, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = meta_from_props(props, path)
        self.metadata: dict[str, str] = dict(props)
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

    def in_worker(self) -> OnnxEngine:
        # one thread per process: processes scale across cores, intra-op threads don't (bench)
        self.threads, self.session = 1, None
        return self

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.session is None:
            self.session = _session(self.path, self.threads)
        logits, features = self.session.run(["logit", "features"], {"input": batch})
        return logits.reshape(-1), features


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
