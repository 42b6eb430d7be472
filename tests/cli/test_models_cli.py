"""``smokerdet models``: list, default NAME / --reset / alone, remove; and who answers after."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES, TINY_TRAIN_ARGS

from smokerdet import paths
from smokerdet.cli import app

PHOTO = str(EXAMPLES / "smoking_0001.jpg")


def _listed(runner) -> dict[str, dict]:
    r = runner.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0, r.output
    return {m["name"]: m for m in json.loads(r.stdout)}


def _answering(runner) -> str:
    r = runner.invoke(app, ["predict", PHOTO, "--json", "--workers", "0"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["model"]


def test_list_marks_the_shipped_model_as_default(runner, model_copy):
    models = _listed(runner)
    assert list(models) == ["default", "tiny"]
    assert models["default"]["is_default"] and models["default"]["is_shipped"]
    assert not models["tiny"]["is_default"] and models["tiny"]["arch"] == "resnet10t"
    assert models["tiny"]["path"] == str(model_copy)
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in r.stdout.splitlines()]
    rows = [row for row in rows if row]
    assert rows[0][:3] == ["*", "default (shipped)", "tf_efficientnet_lite0"]
    assert rows[0][4] == "0.9229 (cv)" and rows[1][4].endswith(" (val)")  # 4 digits, then kind
    assert models["default"]["f1_kind"] == "cross-validated"
    assert models["default"]["f1"] == pytest.approx(0.9229, abs=1e-4)
    assert models["tiny"]["f1_kind"] == "validation"
    assert rows[1][:3] == ["", "tiny", "resnet10t"] and rows[1][7] == str(model_copy)
    assert "* answers when no --model is given" in r.stdout


def test_list_shows_which_models_have_familiarity_stats(runner, model_copy):
    from smokerdet.inference.familiarity import FAMILIARITY_FILE, Familiarity, save
    from smokerdet.models import sidecars

    models = model_copy.parent
    for name in ("in-onnx-only", "none", "other-weights"):
        shutil.copytree(model_copy, models / name)
    (models / "in-onnx-only" / FAMILIARITY_FILE).unlink()  # its model.onnx still carries them
    (models / "none" / FAMILIARITY_FILE).unlink()
    sidecars.embed(models / "none")
    stats = Familiarity.from_bytes((model_copy / FAMILIARITY_FILE).read_bytes())
    save(Familiarity(**{**stats.__dict__, "weights_sha256": "0" * 64}), models / "other-weights")
    listed = _listed(runner)
    assert {name: m["familiarity"] for name, m in listed.items()} == {
        "default": True,
        "tiny": True,
        "in-onnx-only": True,
        "none": False,
        "other-weights": False,
    }
    r = runner.invoke(app, ["models", "list"])
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in r.stdout.splitlines()]
    assert {row[1]: row[6] for row in cells if row} == {
        "default (shipped)": "yes",
        "tiny": "yes",
        "in-onnx-only": "yes",
        "none": "no",
        "other-weights": "no",
    }


def test_default_name_then_alone_then_reset(runner, model_copy):
    assert _answering(runner) == "default"
    r = runner.invoke(app, ["models", "default", "tiny"])
    assert r.exit_code == 0, r.output
    assert "The default model is now tiny" in r.stderr
    assert _listed(runner)["tiny"]["is_default"] and _answering(runner) == "tiny"
    r = runner.invoke(app, ["models", "default"])
    assert r.exit_code == 0 and r.stdout == "tiny\n"
    assert f"tiny answers when no --model is given ({model_copy})" in r.stderr
    r = runner.invoke(app, ["models", "default", "--reset"])
    assert r.exit_code == 0 and "The default model is now default (shipped)" in r.stderr
    assert runner.invoke(app, ["models", "default"]).stdout == "default\n"
    assert _answering(runner) == "default"


def test_default_usage_and_unknown_names(runner, model_copy):
    r = runner.invoke(app, ["models", "default", "tiny", "--reset"])
    assert r.exit_code == 2 and "Error: give a NAME or --reset, not both" in r.stderr
    assert "Hint: `smokerdet models default --reset`" in r.stderr
    r = runner.invoke(app, ["models", "default", "nope"])
    assert r.exit_code == 1 and "Error: no model named 'nope'" in r.stderr
    assert "Hint: known models: default, tiny" in r.stderr
    assert _listed(runner)["default"]["is_default"]  # nothing changed


def test_a_broken_model_is_listed_with_its_problem_and_cannot_be_default(runner, model_copy):
    broken = model_copy.parent / "broken"
    shutil.copytree(model_copy, broken)
    (broken / "model.json").write_text("{not json")
    assert _listed(runner)["broken"]["problem"]
    r = runner.invoke(app, ["models", "list"])
    assert "model.json is unreadable or invalid" in r.stdout
    r = runner.invoke(app, ["models", "default", "broken"])
    assert r.exit_code == 1 and "Error: model 'broken' cannot be the default" in r.stderr
    assert "smokerdet models remove broken" in r.stderr


def test_a_chosen_default_deleted_by_hand_says_how_to_go_back(runner, model_copy):
    assert runner.invoke(app, ["models", "default", "tiny"]).exit_code == 0
    shutil.rmtree(model_copy)
    r = runner.invoke(app, ["models", "default"])
    assert r.exit_code == 1 and "Error: the default model 'tiny'" in r.stderr
    assert "no longer exists" in r.stderr and "smokerdet models default --reset" in r.stderr
    r = runner.invoke(app, ["predict", PHOTO])
    assert r.exit_code == 1 and "smokerdet models default --reset" in r.stderr


def test_remove_the_default_goes_back_to_the_shipped_model(runner, model_copy):
    assert runner.invoke(app, ["models", "default", "tiny"]).exit_code == 0
    r = runner.invoke(app, ["models", "remove", "tiny"])  # not a terminal: no question asked
    assert r.exit_code == 2 and "Error: model 'tiny' answers when no --model is given" in r.stderr
    assert "Hint: pass --yes to remove it anyway" in r.stderr
    assert model_copy.is_dir() and _answering(runner) == "tiny"
    r = runner.invoke(app, ["models", "remove", "tiny", "--yes"])
    assert r.exit_code == 0, r.output
    assert f"Removed model tiny ({model_copy})" in r.stderr
    assert "Note: tiny was the default model; the shipped model answers now" in r.stderr
    assert not model_copy.exists() and list(_listed(runner)) == ["default"]
    assert _answering(runner) == "default"


def test_remove_errors(runner, model_copy):
    r = runner.invoke(app, ["models", "remove", "default"])
    assert r.exit_code == 2 and "Error: the shipped model 'default' cannot be removed" in r.stderr
    assert "Hint:" in r.stderr
    r = runner.invoke(app, ["models", "remove", "nope"])
    assert r.exit_code == 1 and "Error: no model named 'nope'" in r.stderr
    r = runner.invoke(app, ["models", "remove", "tiny"])
    assert r.exit_code == 0 and "was the default" not in r.stderr
    assert Path(model_copy).parent.is_dir() and not model_copy.exists()


def test_models_alone_shows_its_help(runner):
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "Usage: smokerdet models" in r.stdout
    assert "list" in r.output and "default" in r.output and "remove" in r.output


def test_training_never_changes_the_default_and_says_how_to_use_the_model(runner, flat_data):
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(flat_data), "--name", "fresh"])
    assert r.exit_code == 0, r.output
    assert os.listdir(paths.models_dir()) == ["fresh"]  # no lock or pid file left beside it
    assert "\n\n" not in r.stderr  # no blank line before each epoch row off a terminal
    assert re.search(r"^Data .*: train \d+\+\d+, val \d+\+\d+, test \d+\+\d+$", r.stderr, re.M)
    assert r.stderr.rstrip().splitlines()[-1] == (
        "use it with: smokerdet predict --model fresh PHOTOS... or smokerdet models default fresh"
    )
    assert _answering(runner) == "default"
    r = runner.invoke(app, ["predict", PHOTO, "--model", "fresh", "--workers", "0"])
    assert r.exit_code == 0 and "model fresh: 1 image" in r.stderr
    r = runner.invoke(app, ["eval", "--data", str(flat_data), "--model", "fresh", "--split", "all"])
    assert r.exit_code == 0 and f"fresh on all split of {flat_data}" in r.stdout
