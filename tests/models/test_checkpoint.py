"""Model folders: atomic writes, torn pairs, hostile metadata."""

import json
import os
import shutil

import pytest
from conftest import EXAMPLES
from safetensors.torch import load_file, save_file

from smokerdet._io import atomic_write_bytes
from smokerdet.cli import app
from smokerdet.errors import CheckpointError
from smokerdet.models.registry import load_model, resolve_model


def test_atomic_write_replaces_or_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    real_replace = os.replace

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new" * 1000)
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_round_trip(model_copy):
    loaded = load_model("tiny")
    assert loaded.meta.arch == "resnet10t" and loaded.name == "tiny"
    assert resolve_model("tiny") == resolve_model("latest") == ("tiny", model_copy)
    assert resolve_model(str(model_copy / "model.json"))[1] == model_copy


def _edit_meta(folder, **changes):
    meta = json.loads((folder / "model.json").read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    (folder / "model.json").write_text(json.dumps(meta))


def test_torn_pair_is_detected(model_copy):
    sd = load_file(str(model_copy / "model.safetensors"))
    sd["fc.bias"] = sd["fc.bias"] + 1
    save_file(sd, str(model_copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the weights_sha256"):
        load_model(model_copy)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arch": None}, "missing field 'arch'"),
        ({"threshold": None}, "missing field 'threshold'"),
        ({"arch": "../../etc/passwd"}, "field 'arch' is not a model name"),
        ({"arch": "resnet18"}, "tensor"),
        ({"arch": "no_such_net"}, "field 'arch' names no timm model"),
        ({"threshold": 7}, "field 'threshold' must be a number in [0, 1]"),
        ({"tta": "rot90"}, "field 'tta'"),
    ],
)
def test_hostile_or_broken_metadata_is_rejected(model_copy, changes, message):
    _edit_meta(model_copy, **changes)
    with pytest.raises(CheckpointError) as e:
        load_model(model_copy)
    assert message in e.value.message


def test_absurd_input_size_is_rejected(model_copy):
    meta = json.loads((model_copy / "model.json").read_text())
    meta["data_config"]["input_size"] = 100000
    (model_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="input_size' = 100000 is outside 16..1024"):
        load_model(model_copy)


def test_missing_weights_and_bad_json_through_the_cli(runner, model_copy, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_copy, broken)
    (broken / "model.safetensors").unlink()
    r = runner.invoke(app, ["predict", str(EXAMPLES), "--model", str(broken)])
    assert r.exit_code == 1
    assert f"Error: {broken} has no model.safetensors" in r.stderr
    (broken / "model.json").write_text("{not json")
    r = runner.invoke(app, ["eval", "--model", str(broken), "--data", str(EXAMPLES)])
    assert r.exit_code == 1
    assert "is not valid JSON" in r.stderr
