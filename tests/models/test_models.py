"""Which model answers: the shipped one, unless --model or a chosen default says otherwise."""

import json
import os

import pytest
from conftest import EXAMPLES

import smokerdet
from smokerdet.errors import CheckpointError, ConfigError, ModelNotFoundError
from smokerdet.models.registry import (
    list_models,
    load_model,
    remove_model,
    reset_default,
    resolve_model,
    set_default,
)
from smokerdet.paths import default_choice_file, default_model_dir


def test_a_trained_model_does_not_replace_the_shipped_one(model_copy):
    assert resolve_model(None) == ("default", default_model_dir())
    assert load_model(None).name == "default"
    first = next(iter(smokerdet.predict([EXAMPLES / "smoking_0001.jpg"], workers=0)))
    assert first.model == "default"
    assert resolve_model("latest") == ("tiny", model_copy)


def test_list_marks_the_shipped_model_as_default(model_copy):
    models = list_models()
    assert [m.name for m in models] == ["default", "tiny"]
    shipped, tiny = models
    assert shipped.is_shipped and shipped.is_default and shipped.arch
    assert not tiny.is_shipped and not tiny.is_default
    assert tiny.arch == "resnet10t" and tiny.path == model_copy and tiny.created
    assert "f1" in tiny.val_metrics and tiny.problem is None
    assert shipped.familiarity and tiny.familiarity
    assert json.loads(json.dumps(tiny.to_dict()))["name"] == "tiny"
    assert json.loads(json.dumps(tiny.to_dict()))["familiarity"] is True


def test_set_and_reset_default(model_copy, smokerdet_home):
    info = set_default("tiny")
    assert info.is_default and info.name == "tiny"
    assert default_choice_file().parent == smokerdet_home
    assert json.loads(default_choice_file().read_text())["model"] == "tiny"
    assert resolve_model(None) == ("tiny", model_copy)
    assert [m.name for m in list_models() if m.is_default] == ["tiny"]
    assert reset_default().name == "default"
    assert not default_choice_file().exists()
    assert resolve_model(None) == ("default", default_model_dir())
    set_default("tiny")
    assert set_default("default").is_shipped  # "default" is the shipped model
    assert resolve_model(None)[0] == "default"


def test_set_default_refuses_an_unknown_name(model_copy):
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'") as e:
        set_default("nope")
    assert "default, tiny" in e.value.hint and "smokerdet models list" in e.value.hint
    assert not default_choice_file().exists()


def test_set_default_refuses_an_unreadable_model(model_copy):
    (model_copy / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be the default") as e:
        set_default("tiny")
    assert "smokerdet models remove tiny" in e.value.hint


def test_unknown_model_hint_names_default_and_the_list_command(model_copy):
    with pytest.raises(ModelNotFoundError, match="no model named or at 'nope'") as e:
        resolve_model("nope")
    assert "default (shipped)" in e.value.hint and "tiny" in e.value.hint
    assert "smokerdet models list" in e.value.hint


def test_a_chosen_default_that_vanished_is_an_error_not_a_guess(model_copy):
    set_default("tiny")
    (model_copy / "model.json").unlink()
    with pytest.raises(ModelNotFoundError, match="'tiny' .* no longer exists") as e:
        resolve_model(None)
    assert "smokerdet models default --reset" in e.value.hint


def test_a_corrupt_choice_file_is_an_error_with_the_reset_hint(smokerdet_home):
    default_choice_file().parent.mkdir(parents=True)
    default_choice_file().write_text("[1, 2")
    with pytest.raises(ModelNotFoundError, match="cannot read the default model choice") as e:
        resolve_model(None)
    assert "--reset" in e.value.hint
    assert not any(m.is_default for m in list_models())  # the listing still works
    reset_default()
    assert resolve_model(None)[0] == "default"


def test_remove_refuses_the_shipped_model():
    with pytest.raises(ConfigError, match="shipped model 'default' cannot be removed") as e:
        remove_model("default")
    assert e.value.exit_code == 2 and "smokerdet models list" in e.value.hint
    assert (default_model_dir() / "model.json").is_file()


def test_remove_unknown_model(model_copy):
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        remove_model("nope")
    assert model_copy.is_dir()


def test_remove_a_model_that_is_the_default(model_copy):
    set_default("tiny")
    with pytest.raises(ConfigError, match="'tiny' answers when no --model is given") as e:
        remove_model("tiny")
    assert e.value.exit_code == 2 and "--yes" in e.value.hint and model_copy.is_dir()
    removed = remove_model("tiny", default_too=True)
    assert removed.name == "tiny" and removed.is_default
    assert not model_copy.exists()
    assert os.listdir(model_copy.parent) == []  # no hidden leftover
    assert not default_choice_file().exists()
    assert resolve_model(None)[0] == "default"
    assert [m.name for m in list_models()] == ["default"]
