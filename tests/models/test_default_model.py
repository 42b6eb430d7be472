"""The model shipped in the package: it loads offline and gives the recorded answers."""

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES

import smokerdet
from smokerdet.cli import app
from smokerdet.models.registry import default_model_available, load_model
from smokerdet.paths import default_model_dir

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "default_examples.json"


def test_the_package_ships_a_small_default_model():
    assert default_model_available()
    size = (default_model_dir() / "model.safetensors").stat().st_size
    assert size < 25 * 1024 * 1024
    meta = load_model("default").meta
    assert meta.provenance["backbone"]["license"] == "Apache-2.0"
    assert "build_command" in meta.provenance


def test_default_model_matches_the_golden_probabilities():
    golden = json.loads(GOLDEN.read_text())
    preds = {Path(p.path).name: p for p in smokerdet.predict([EXAMPLES], model="default")}
    assert set(preds) == set(golden)
    for name, expected in golden.items():
        assert preds[name].label == expected["label"], name
        assert preds[name].probability == pytest.approx(expected["probability"], abs=2e-3), name


def test_predict_uses_the_default_model_when_nothing_was_trained(runner):
    r = runner.invoke(app, ["predict", str(EXAMPLES), "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 12 and {row["model"] for row in rows} == {"default"}
    r = runner.invoke(app, ["info", "--json"])
    assert json.loads(r.stdout)["active_model"]["name"] == "default"


def test_the_shipped_model_carries_rehearsal_rows_for_its_own_backbone():
    from smokerdet.models import rehearsal

    meta = load_model("default").meta
    rows = rehearsal.load(default_model_dir(), meta)
    assert rows is not None and rows.weights_sha256 == meta.weights_sha256
    assert 400 <= len(rows.labels) <= rehearsal.MAX_ROWS and set(rows.labels.tolist()) == {0, 1}
    assert rows.features.shape[1] == 1280


def test_the_shipped_onnx_file_carries_the_folders_familiarity_and_rehearsal_byte_for_byte():
    from smokerdet.inference.backend import open_engine
    from smokerdet.models import sidecars

    engine = open_engine("default", backend="onnx")
    carried = 0
    for name, field in sidecars.FIELDS.items():
        assert sidecars.decode(engine.metadata[field]) == (default_model_dir() / name).read_bytes()
        carried += len(engine.metadata[field])
    assert carried < 2.5e6  # base64 of the 334 kB stats and the 1.3 MB of fp16 rows


def test_eval_knows_the_examples_are_photos_the_shipped_model_trained_on():
    from smokerdet.inference import open_engine
    from smokerdet.models import training_photos as tp
    from smokerdet.models.checkpoint import read_meta
    from smokerdet.scoring.evaluate import evaluate

    meta = read_meta(default_model_dir())
    listed = tp.load(default_model_dir(), meta.data_fingerprint["sha256"])
    assert listed is not None and len(listed.roles) == meta.data_fingerprint["n_files"] == 896
    engine_props = open_engine("default", backend="onnx").metadata
    assert tp.from_props(engine_props) == listed  # the ONNX file alone knows them too
    report = evaluate(data=EXAMPLES, split="all")
    assert report.in_sample is not None
    assert (report.in_sample["photos"], report.in_sample["of"]) == (12, 12)
    assert report.notes == [
        "all 12 photos were in the model's training data (in-sample): these figures are not "
        "an estimate of its accuracy on new photos"
    ]


def test_a_site_adapts_the_shipped_model_head_only(runner, smokerdet_home):
    """The path a real site takes: `train --init default` on its 12 photos (examples/)."""
    r = runner.invoke(app, ["train", "--init", "default", "--data", str(EXAMPLES), "--json",
                            "--name", "site", "--cv", "3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["recipe"] == "head" and out["adaptation"]["photos"] == 12
    assert out["adaptation"]["rehearsal_rows"] >= 400
    # It knows the site's photos and, through the shipped model, its 896 training photos.
    r = runner.invoke(app, ["eval", "--model", "site", "--data", str(EXAMPLES), "--split", "all",
                            "--json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["in_sample"]["photos"] == 12
    listed = json.loads((smokerdet_home / "models" / "site" / "training_photos.json").read_text())
    assert len(listed["photos"]["fit"]) == 12 and len(listed["photos"]["init"]) == 896 - 12
    preds = list(smokerdet.predict([EXAMPLES], model="site"))
    assert sum(p.label == ("smoking" if Path(p.path).name.startswith("smoking_") else
                           "not_smoking") for p in preds) >= 11  # fmt: skip
