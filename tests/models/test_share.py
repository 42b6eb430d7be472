"""Sharing models through the Hugging Face Hub: ``models push`` and ``--model hf://``.

The real ``huggingface_hub`` client talks to the local fake Hub of ``tests/hubfake.py``: the
upload protocol (create, preupload, LFS batch and PUT, the NDJSON commit) and the downloads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import NO_TORCH, write_flat

from smokerdet.cli import app
from smokerdet.models.share import MANIFEST

pytest_plugins = ["hubfake"]  # the fixtures server and hub_online

REPO = "org/tiny"


@pytest.fixture
def hub(hub_online, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_online.token)
    return hub_online


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return write_flat(tmp_path / "photos", n_per_class=3)


def _push(runner, *args: str) -> str:
    r = runner.invoke(app, ["models", "push", "tiny", REPO, *args])
    assert r.exit_code == 0, r.output
    return r.stdout.strip()


def _probabilities(runner, model: str, photos: Path) -> list[float]:
    r = runner.invoke(app, ["predict", "--model", model, "--json", "--workers", "0", str(photos)])
    assert r.exit_code == 0, r.output
    return [json.loads(line)["probability"] for line in r.stdout.splitlines()]


def test_push_shares_the_files_a_card_and_a_manifest(runner, hub, model_copy, tmp_path):
    spec = _push(runner)
    repo = hub.repos[REPO]
    commit = repo.refs["main"]
    assert spec == f"hf://{REPO}@{commit}"
    files = repo.commits[commit]
    for name in ("model.json", "model.safetensors", "model.onnx", "familiarity.safetensors",
                 "curves.png", "README.md", MANIFEST):  # fmt: skip
        assert name in files, sorted(files)
    assert repo.lfs == {n for n in files if n.endswith((".safetensors", ".onnx"))}
    manifest = json.loads(files[MANIFEST])
    assert manifest["format"] == 1 and set(manifest["files"]) == set(files) - {
        MANIFEST,
        "README.md",
    }
    for name, sha in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == sha, name
    shared = files["model.json"].decode()
    assert str(tmp_path) not in shared and "/" not in json.loads(shared)["train_args"]["data"]
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: smokerdet\npipeline_tag: image-classification\n")
    assert "| F1 |" in card and "| validation: these photos chose the epoch" in card
    assert f"smokerdet predict --model hf://{REPO}" in card
    assert manifest["files"]["model.onnx"] in card


def test_predict_and_eval_from_the_hub_match_the_local_model(runner, hub, model_copy, photos):
    _push(runner)
    here = _probabilities(runner, "tiny", photos)
    assert _probabilities(runner, f"hf://{REPO}", photos) == here
    r = runner.invoke(
        app, ["eval", "--model", f"hf://{REPO}", "--data", str(photos), "--split", "all", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"].startswith(f"hf://{REPO}@")


def test_a_commit_pins_what_was_pushed_then(runner, hub, model_copy, smokerdet_home):
    first = _push(runner)
    meta = json.loads((model_copy / "model.json").read_text())
    meta["threshold"] = 0.123
    (model_copy / "model.json").write_text(json.dumps(meta))
    second = _push(runner, "--message", "another threshold")
    assert first != second

    from smokerdet.models.checkpoint import read_meta
    from smokerdet.models.registry import resolve_model

    assert read_meta(resolve_model(first)[1]).threshold != 0.123
    assert read_meta(resolve_model(f"hf://{REPO}")[1]).threshold == 0.123
    name, _ = resolve_model(first)
    assert name == f"hf://{REPO}@{first.split('@')[1][:7]}"


def test_a_private_repo_is_read_with_hf_token(runner, hub, model_copy, photos, monkeypatch):
    _push(runner, "--private")
    assert hub.repos[REPO].private
    monkeypatch.delenv("HF_TOKEN")
    r = runner.invoke(app, ["predict", "--model", f"hf://{REPO}", str(photos)])
    assert r.exit_code == 1
    assert (
        "Error: the Hub at http://127.0.0.1" in r.stderr
        and "has no repo org/tiny, or it is private (HTTP 401)" in r.stderr
    )
    assert "Hint:" in r.stderr and "HF_TOKEN" in r.stderr.split("Hint:")[1]
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert len(_probabilities(runner, f"hf://{REPO}", photos)) == 6


def test_a_pulled_model_works_offline(runner, hub, model_copy, photos, monkeypatch):
    _push(runner)
    online = _probabilities(runner, f"hf://{REPO}", photos)
    hub.close()  # no Hub at all: the cache answers
    assert _probabilities(runner, f"hf://{REPO}", photos) == online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _probabilities(runner, f"hf://{REPO}", photos) == online
    r = runner.invoke(app, ["predict", "--model", "hf://org/never-pulled", str(photos)])
    assert r.exit_code == 1
    assert "Error: hf://org/never-pulled is not in the cache" in r.stderr
    assert "pull it once while online" in r.stderr


def test_a_tampered_download_is_refused_and_removed(
    runner, hub, model_copy, photos, smokerdet_home, monkeypatch
):
    _push(runner)
    good = hub.repos[REPO].commits[hub.repos[REPO].refs["main"]]["model.onnx"]
    hub.tamper[(REPO, "model.onnx")] = good[:-64] + bytes(64)  # the right ETag, other bytes
    r = runner.invoke(app, ["predict", "--model", f"hf://{REPO}", str(photos)])
    assert r.exit_code == 1
    assert (
        f"Error: model.onnx from hf://{REPO} does not match its SHA-256 in smokerdet.json; it "
        "was removed from the cache and not used"
    ) in r.stderr
    assert "Hint: pull it again" in r.stderr and r.stdout == ""
    cached = list((smokerdet_home / "hub").rglob("model.onnx"))
    assert cached == []  # neither the snapshot's link nor the blob stayed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline, the tampered file is not there to use
    r = runner.invoke(app, ["predict", "--model", f"hf://{REPO}", str(photos)])
    assert r.exit_code == 1 and "is not in the cache" in r.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    del hub.tamper[(REPO, "model.onnx")]
    assert _probabilities(runner, f"hf://{REPO}", photos) == _probabilities(runner, "tiny", photos)


def test_train_init_from_the_hub_adapts_it(runner, hub, model_copy, tmp_path, smokerdet_home):
    _push(runner)
    site = write_flat(tmp_path / "site", n_per_class=8)
    r = runner.invoke(app, ["train", "--init", f"hf://{REPO}", "--data", str(site)])
    assert r.exit_code == 0, r.output
    trained = [p.name for p in (smokerdet_home / "models").glob("[!.]*") if p.name != "tiny"]
    assert len(trained) == 1 and trained[0].startswith("tiny-"), trained
    meta = json.loads((smokerdet_home / "models" / trained[0] / "model.json").read_text())
    assert meta["provenance"]["adaptation"]["init"].startswith(f"hf://{REPO}@")


def test_serve_a_pulled_model_without_torch(runner, hub, model_copy, photos, tmp_path):
    from serve_process import Server

    _push(runner)
    _probabilities(runner, f"hf://{REPO}", photos)  # pulled into the cache
    server = Server(tmp_path, "--model", f"hf://{REPO}", runner=("-c", NO_TORCH))  # offline
    try:
        with server.client() as client:
            info = client.get("/v1/model").json()
    finally:
        server.stop()
    assert info["name"].startswith(f"hf://{REPO}@"), info
    assert "imported: []" in server.stderr()


def test_push_errors(runner, hub, model_copy, monkeypatch):
    r = runner.invoke(app, ["models", "push", "tiny", "no-slash"])
    assert r.exit_code == 2 and "Error: REPO_ID 'no-slash' is not ORG/NAME" in r.stderr
    r = runner.invoke(app, ["models", "push", "nosuch", REPO])
    assert r.exit_code == 1 and "Error: no model named or at 'nosuch'" in r.stderr
    assert "smokerdet models push PATH ORG/NAME" in r.stderr and "--model" not in r.stderr
    monkeypatch.delenv("HF_TOKEN")
    r = runner.invoke(app, ["models", "push", "tiny", REPO])
    assert r.exit_code == 1
    assert (
        "Error: the Hub at http://127.0.0.1" in r.stderr
        and "refused to write org/tiny (HTTP 401)" in r.stderr
    )
    assert "Hint: set HF_TOKEN" in r.stderr
    assert REPO not in hub.repos
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = runner.invoke(app, ["models", "push", "tiny", REPO])
    assert r.exit_code == 1 and "HF_HUB_OFFLINE is set" in r.stderr
    r = runner.invoke(app, ["predict", "--model", "hf://just-a-name", "x.jpg"])
    assert r.exit_code == 2 and "expected hf://ORG/NAME or hf://ORG/NAME@REVISION" in r.stderr
    r = runner.invoke(app, ["export", f"hf://{REPO}"])
    assert r.exit_code == 2 and "--out FILE" in r.stderr


def test_a_repo_without_a_manifest_is_not_a_smokerdet_model(runner, hub, photos):
    from hubfake import Repo

    hub.repos["org/other"] = Repo(refs={"main": "a" * 40}, commits={"a" * 40: {"x.txt": b"x"}})
    r = runner.invoke(app, ["predict", "--model", "hf://org/other", str(photos)])
    assert r.exit_code == 1
    assert "the repo has no smokerdet.json; it is not a model pushed with smokerdet" in r.stderr
    r = runner.invoke(app, ["predict", "--model", "hf://org/missing", str(photos)])
    assert r.exit_code == 1 and "has no repo org/missing" in r.stderr
    r = runner.invoke(app, ["predict", "--model", "hf://org/other@nosuch", str(photos)])
    assert r.exit_code == 1 and "has no such revision" in r.stderr


def test_the_manifest_is_checked_for_what_it_lists(runner, hub, photos):
    from hubfake import Repo

    bad = json.dumps({"format": 1, "files": {"../../escape": "0" * 64}}).encode()
    hub.repos["org/bad"] = Repo(refs={"main": "b" * 40}, commits={"b" * 40: {MANIFEST: bad}})
    r = runner.invoke(app, ["predict", "--model", "hf://org/bad", str(photos)])
    assert r.exit_code == 1 and "smokerdet.json is not a smokerdet manifest" in r.stderr
