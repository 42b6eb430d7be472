"""smokerdet.export: ONNX files with metadata, checked against torch; the shipped ONNX file;
the familiarity stats and rehearsal rows they carry; --refit-familiarity."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from conftest import EXAMPLES, write_flat

import smokerdet
from smokerdet.cli import app
from smokerdet.inference.backend import open_engine
from smokerdet.inference.familiarity import FAMILIARITY_FILE, Familiarity
from smokerdet.models import sidecars, training_photos
from smokerdet.models.checkpoint import read_meta
from smokerdet.models.export import ExportError, export_onnx
from smokerdet.models.onnx_format import read_props, with_props
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
    assert result.familiarity and result.rehearsal and result.not_carried == {}
    props = props_of(result.path)
    for name, field in sidecars.FIELDS.items():  # the folder's own files, byte for byte
        assert sidecars.decode(props[field]) == (model_copy / name).read_bytes()
    # ... and the list of its training photos, as the folder's JSON text
    photos = props[training_photos.FIELD]
    assert photos == (model_copy / training_photos.TRAINING_PHOTOS_FILE).read_text()
    fields = [*sidecars.FIELDS.values(), training_photos.FIELD]
    assert result.carried_bytes == sum(len(f) + len(props[f]) for f in fields)
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
    n_train = Familiarity.from_bytes((model_copy / FAMILIARITY_FILE).read_bytes()).n_train
    lines = re.fullmatch(
        r"Exported resnet10t \((\d+\.\d) MB\), max \|dp\| vs torch = (\S+)\n"
        rf"It carries familiarity stats of {n_train} photos and rehearsal rows: (\S+) MB\n",
        r.stderr,
    )
    assert lines, r.stderr
    assert float(lines.group(1)) == pytest.approx(size_mb, abs=0.05)
    assert float(lines.group(2)) <= 1e-3  # resnet10t has a pooled linear head: no heatmap note
    carried = sum(len(v) for k, v in props_of(out).items() if k in ("familiarity", "rehearsal"))
    assert float(lines.group(3)) == pytest.approx(carried / 1e6, abs=0.01)
    # the file alone is a model: predict runs it with nothing beside it, through ONNX
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx"]
    photos = tmp_path / "photos"
    write_flat(photos, n_per_class=2)
    r = runner.invoke(app, ["predict", "--model", str(out), str(photos), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 4 and all(row["error"] is None and row["label"] for row in rows)
    assert all(row["model"] == "tiny" for row in rows)


def alone(source: Path, tmp_path: Path) -> Path:
    """``source`` copied alone into an empty folder."""
    folder = tmp_path / "alone"
    folder.mkdir()
    return Path(shutil.copy(source, folder / "tiny.onnx"))


def predict_json(runner, model: Path, tmp_path: Path) -> tuple[list[dict], list[str]]:
    """Rows of ``predict --json`` on four photos, and its stderr lines about familiarity."""
    photos = write_flat(tmp_path / "photos", n_per_class=2)
    r = runner.invoke(app, ["predict", "--model", str(model), str(photos), "--json"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if "familiarity" in line]
    return [json.loads(x) for x in r.stdout.splitlines()], lines


def test_an_exported_file_copied_alone_keeps_its_familiarity(runner, model_copy, tmp_path):
    r = runner.invoke(app, ["export", "tiny"])
    assert r.exit_code == 0, r.output
    rows, notes = predict_json(runner, alone(model_copy / "model.onnx", tmp_path), tmp_path)
    assert len(rows) == 4 and all(row["familiarity"] > 0 for row in rows)
    assert notes == []
    with_folder = list(smokerdet.predict([tmp_path / "photos"], model="tiny"))
    assert [row["familiarity"] for row in rows] == pytest.approx(
        [p.familiarity for p in with_folder], rel=1e-6
    )


def tampered(path: Path, blob: bytes) -> None:
    """Replace the familiarity stats inside the ONNX file at ``path`` by ``blob``."""
    whole = path.read_bytes()
    path.write_bytes(with_props(whole, {**read_props(whole), "familiarity": sidecars.encode(blob)}))


def test_a_tampered_stats_blob_in_the_onnx_file_is_one_note_and_no_familiarity(
    runner, model_copy, tmp_path
):
    onnx_file = alone(model_copy / "model.onnx", tmp_path)
    blob = bytearray((model_copy / FAMILIARITY_FILE).read_bytes())
    blob[-40:] = b"\xff" * 40  # the last floats: NaN
    tampered(onnx_file, bytes(blob))
    rows, notes = predict_json(runner, onnx_file, tmp_path)
    assert len(rows) == 4 and all(row["familiarity"] is None for row in rows)
    assert notes == [
        f"Warning: field 'familiarity' of {onnx_file} is not valid (a value is not finite): "
        "predictions carry no familiarity score (export the file again from its model "
        "folder, with --refit-familiarity DATA)"
    ]


def test_stats_of_other_weights_in_the_onnx_file_are_one_note_and_no_familiarity(
    runner, model_copy, tmp_path
):
    onnx_file = alone(model_copy / "model.onnx", tmp_path)
    stats = Familiarity.from_bytes((model_copy / FAMILIARITY_FILE).read_bytes())
    other = Familiarity(**{**stats.__dict__, "weights_sha256": "0" * 64})
    tampered(onnx_file, other.to_bytes())
    rows, notes = predict_json(runner, onnx_file, tmp_path)
    assert len(rows) == 4 and all(row["familiarity"] is None for row in rows)
    assert notes == [
        f"Warning: field 'familiarity' of {onnx_file} belongs to other weights (weights_sha256 "
        f"000000000000..., the model's is {stats.weights_sha256[:12]}...): predictions carry "
        "no familiarity score (export the file again from its model folder, with "
        "--refit-familiarity DATA)"
    ]


def test_an_old_file_without_stats_is_one_note(runner, model_copy, tmp_path):
    onnx_file = alone(model_copy / "model.onnx", tmp_path)
    whole = onnx_file.read_bytes()
    props = {k: v for k, v in read_props(whole).items() if k not in sidecars.FIELDS.values()}
    onnx_file.write_bytes(with_props(whole, props))
    rows, notes = predict_json(runner, onnx_file, tmp_path)
    assert all(row["familiarity"] is None for row in rows)
    assert notes == [
        "Note: tiny has no familiarity stats: predictions carry no familiarity score (export "
        "the file again from its model folder, with --refit-familiarity DATA)"
    ]


def test_export_of_a_model_without_stats_says_so(runner, model_copy: Path, tmp_path: Path):
    (model_copy / FAMILIARITY_FILE).unlink()
    out = tmp_path / "tiny.onnx"
    r = runner.invoke(app, ["export", "tiny", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines()[1:] == [
        "It carries rehearsal rows: " + r.stderr.splitlines()[1].split(": ")[1],
        f"Note: {FAMILIARITY_FILE} of tiny is missing: the file carries no familiarity stats, "
        "so its predictions carry no familiarity score "
        "(`smokerdet export tiny --refit-familiarity DATA` fits them)",
    ]
    assert "familiarity" not in props_of(out) and "rehearsal" in props_of(out)


def test_refit_familiarity_writes_stats_into_the_folder_and_the_file(
    runner, model_copy: Path, flat_data: Path, tmp_path: Path
):
    (model_copy / FAMILIARITY_FILE).unlink()
    sidecars.embed(model_copy)
    out = tmp_path / "tiny.onnx"
    r = runner.invoke(
        app, ["export", "tiny", "--refit-familiarity", str(flat_data), "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    blob = (model_copy / FAMILIARITY_FILE).read_bytes()
    stats = Familiarity.from_bytes(blob)
    # flat_data: 10 photos a class, split like training splits it: 20% test, then 20% val
    assert (stats.n_train, stats.n_val, stats.calibration) == (12, 4, "validation")
    assert stats.weights_sha256 == read_meta(model_copy).weights_sha256
    assert "It carries familiarity stats of 12 photos and rehearsal rows (refitted): " in r.stderr
    for onnx_file in (out, model_copy / "model.onnx"):
        assert sidecars.decode(props_of(onnx_file)["familiarity"]) == blob
    assert all(p.familiarity is not None for p in smokerdet.predict([flat_data], model="tiny"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("missing", "dataset folder not found: {data}"),
        ("unlabelled", "no labelled images in {data}: found 1 images, 0 with a class prefix"),
    ],
)
def test_refit_familiarity_on_bad_data_is_exit_1_and_writes_nothing(
    runner, model_copy: Path, tmp_path: Path, data: str, message: str
):
    folder = tmp_path / data
    if data == "unlabelled":
        write_flat(folder, n_per_class=1)
        (folder / "notsmoking_0000.jpg").unlink()
        (folder / "smoking_0000.jpg").rename(folder / "photo.jpg")
    before = {p.name: p.read_bytes() for p in model_copy.iterdir() if p.is_file()}
    r = runner.invoke(app, ["export", "tiny", "--refit-familiarity", str(folder)])
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.startswith(
        f"Error: --refit-familiarity {folder}: {message.format(data=folder)}"
    ), r.stderr
    assert "Hint: give --refit-familiarity the dataset folder the model was trained on" in r.stderr
    assert {p.name: p.read_bytes() for p in model_copy.iterdir() if p.is_file()} == before


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
