"""smokerdet.export: ONNX files with metadata, checked against torch; the shipped ONNX file."""

import hashlib
import json
import re
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from conftest import EXAMPLES, write_flat

import smokerdet
from smokerdet.cli import app
from smokerdet.inference.backend import open_engine
from smokerdet.models.checkpoint import read_meta
from smokerdet.models.export import ExportError, export_onnx
from smokerdet.paths import default_model_dir
from smokerdet.training.config import TrainConfig
from smokerdet.training.loop import TrainingInterrupted, TrainReporter
from smokerdet.training.train import resume_training, train


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


# --- the command -------------------------------------------------------------------------------


def test_export_command_prints_the_path_and_the_check(runner, model_copy: Path, tmp_path: Path):
    out = tmp_path / "alone" / "tiny.onnx"
    r = runner.invoke(app, ["export", "tiny", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out) and out.is_file()
    size_mb = out.stat().st_size / 1e6
    line = re.fullmatch(
        r"Exported resnet10t \((\d+\.\d) MB\), max \|dp\| vs torch = (\S+)\n", r.stderr
    )
    assert line, r.stderr
    assert float(line.group(1)) == pytest.approx(size_mb, abs=0.05)
    assert float(line.group(2)) <= 1e-3  # resnet10t has a pooled linear head: no heatmap note
    # the file alone is a model: predict runs it with nothing beside it, through ONNX
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx"]
    photos = tmp_path / "photos"
    write_flat(photos, n_per_class=2)
    r = runner.invoke(app, ["predict", "--model", str(out), str(photos), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 4 and all(row["error"] is None and row["label"] for row in rows)
    assert all(row["model"] == "tiny" for row in rows)


def test_export_command_default_writes_into_the_model_folder(runner, model_copy: Path):
    r = runner.invoke(app, ["export", "tiny"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(model_copy / "model.onnx")
    assert open_engine("tiny").backend == "onnx"


def test_export_command_unknown_model_is_exit_1(runner):
    r = runner.invoke(app, ["export", "no-such-model"])
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: no model named or at 'no-such-model'")
    assert "Hint: " in r.stderr and r.stdout == ""
    # export takes MODEL, not --model: the hint says how it takes a path
    assert "--model" not in r.stderr and "smokerdet export PATH" in r.stderr


def test_export_command_unwritable_out_is_exit_1(runner, model_copy: Path, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "tiny.onnx"
    r = runner.invoke(app, ["export", "tiny", "--out", str(out)])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: cannot write {out}: ")
    assert "Hint: check --out" in r.stderr and r.stdout == ""
    assert blocker.read_text() == "not a folder"


# --- train exports the model it saves -----------------------------------------------------------


def assert_onnx_made_from_folder(folder: Path) -> None:
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert props_of(folder / "model.onnx")["weights_sha256"] == weights
    assert read_meta(folder).weights_sha256 == weights


def test_a_trained_model_predicts_through_its_onnx_file(trained_model: Path):
    assert_onnx_made_from_folder(trained_model)
    assert open_engine(trained_model).backend == "onnx"
    photos = sorted(EXAMPLES.glob("*.jpg"))[:6]
    onnx_rows = list(smokerdet.predict(photos, model=trained_model, workers=0))
    torch_rows = list(smokerdet.predict(photos, model=trained_model, workers=0, backend="torch"))
    for a, b in zip(onnx_rows, torch_rows, strict=True):
        assert a.error is None and a.label == b.label
        assert a.probability == pytest.approx(b.probability, abs=1e-3)


class StopAt(TrainReporter):
    """Presses Ctrl-C when an epoch starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_half_and_resumed_runs_export_what_they_save(flat_data: Path, smokerdet_home: Path):
    cfg = TrainConfig(
        arch="resnet10t",
        pretrained=False,
        img_size=32,
        epochs=3,
        batch_size=8,
        workers=0,
        data=flat_data,
        name="cut",
        patience=0,
        half=True,
    )
    with pytest.raises(TrainingInterrupted):
        train(cfg, StopAt(3))
    folder = smokerdet_home / "models" / "cut"
    assert_onnx_made_from_folder(folder)  # epochs 1 and 2 saved fp16 weights and their export
    resumed = resume_training("cut")
    assert resumed.path == folder
    assert_onnx_made_from_folder(folder)
    assert open_engine("cut").backend == "onnx"
