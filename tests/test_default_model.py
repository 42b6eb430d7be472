"""The model shipped in the package: it loads offline and gives the recorded answers."""

import json
from pathlib import Path

import pytest
from conftest import EXAMPLES

import smokerdet
from smokerdet.checkpoint import default_model_available, load_model
from smokerdet.cli import app
from smokerdet.paths import default_model_dir

GOLDEN = Path(__file__).resolve().parent / "golden" / "default_examples.json"


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
