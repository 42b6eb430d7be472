"""smokerdet.export: ONNX files with metadata, checked against torch; the shipped ONNX file."""

import hashlib
import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from smokerdet.checkpoint import read_meta
from smokerdet.engine import open_engine
from smokerdet.export import ExportError, export_onnx
from smokerdet.paths import default_model_dir


def props_of(path: Path) -> dict[str, str]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.get_modelmeta().custom_metadata_map


def test_the_shipped_onnx_was_made_from_exactly_the_shipped_weights():
    folder = default_model_dir()
    props = props_of(folder / "model.onnx")
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    meta = read_meta(folder)
    assert props["weights_sha256"] == weights == meta.weights_sha256
    assert props["arch"] == meta.arch
    assert json.loads(props["data_config"]) == meta.data_config.to_dict()
    assert float(props["threshold"]) == meta.threshold
    assert props["tta"] == (meta.tta or "")
    # fp32, as onnxruntime runs fastest on a CPU
    model = onnx.load(str(folder / "model.onnx"))
    assert {t.data_type for t in model.graph.initializer} <= {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
    }


def test_export_writes_metadata_and_agrees_with_torch(model_copy: Path):
    result = export_onnx("tiny")
    assert result.path == model_copy / "model.onnx" and result.path.is_file()
    assert result.max_abs_diff <= 1e-3 and result.heatmaps
    props = props_of(result.path)
    meta = read_meta(model_copy)
    assert props["format"] == "smokerdet-onnx/1"
    assert props["arch"] == "resnet10t"
    assert props["weights_sha256"] == meta.weights_sha256
    assert json.loads(props["class_names"]) == meta.class_names
    assert props["smokerdet_version"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [3, 32, 32] and not isinstance(inp.shape[0], int)  # dynamic batch
    assert [o.name for o in session.get_outputs()] == ["logit", "features"]


def test_an_exported_file_works_alone(model_copy: Path, tmp_path: Path):
    out = tmp_path / "alone" / "tiny.onnx"
    export_onnx("tiny", out=out)
    engine = open_engine(out)
    assert engine.backend == "onnx" and engine.name == "tiny"
    assert engine.meta.threshold == read_meta(model_copy).threshold


def test_export_into_a_folder_path_is_refused(model_copy: Path, tmp_path: Path):
    with pytest.raises(ExportError, match="--out .* is a folder"):
        export_onnx("tiny", out=tmp_path)
