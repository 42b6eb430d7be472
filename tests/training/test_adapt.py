"""Site adaptation with few photos: ``train --init M`` refits the head (smokerdet.adapt)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_flat
from safetensors.torch import load_file

from smokerdet.cli import app
from smokerdet.data import Sample
from smokerdet.metrics import binary_metrics
from smokerdet.models import rehearsal
from smokerdet.models.checkpoint import read_meta
from smokerdet.models.registry import load_model
from smokerdet.training import TrainConfig, train
from smokerdet.training.recipes import head as adapt
from smokerdet.training.recipes.head import HeadFit, fit_head, site_folds

ADAPT = ["train", "--workers", "0", "--batch-size", "8"]


def _site(tmp_path, n=8):
    return write_flat(tmp_path / "site", n_per_class=n)


def test_a_trained_model_keeps_rehearsal_rows_of_its_training_photos(trained_model):
    rows = rehearsal.Rehearsal.from_bytes((trained_model / rehearsal.REHEARSAL_FILE).read_bytes())
    meta = read_meta(trained_model)
    assert rows.weights_sha256 == meta.weights_sha256
    assert 8 <= len(rows.labels) < 24  # the training split of the 24 photos, not val or test
    assert set(rows.labels.tolist()) == {0, 1}
    assert rows.features.shape[1] == load_model(trained_model).model.num_features


def test_head_recipe_refits_only_the_head_and_cross_validates_the_threshold(
    runner, model_copy, tmp_path, smokerdet_home
):
    site = _site(tmp_path)
    r = runner.invoke(
        app, [*ADAPT, "--init", "tiny", "--data", str(site), "--name", "site", "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["recipe"] == "head" and out["epochs_run"] == 0 and out["history"] == []
    assert out["adaptation"]["photos"] == 16 and out["adaptation"]["rehearsal_rows"] > 0
    assert "Adapting tiny head-only" in r.stderr and "Warning: only" not in r.stderr  # 16 photos

    folder = smokerdet_home / "models" / "site"
    old, new = (
        load_file(str(model_copy / "model.safetensors")),
        load_file(str(folder / "model.safetensors")),
    )
    head = [k for k in old if k.startswith("fc.")]
    assert head and all(not torch.equal(old[k], new[k]) for k in head)
    assert all(torch.equal(old[k], new[k]) for k in old if k not in head), "backbone moved"

    meta = read_meta(folder)
    init = read_meta(model_copy)
    assert meta.provenance["backbone_weights_sha256"] == init.weights_sha256
    assert meta.provenance["adaptation"]["recipe"] == "head"
    assert "cross-validated" in meta.cv_metrics["kind"]
    assert meta.cv_metrics["k"] == out["adaptation"]["folds"] == 5
    assert meta.threshold == pytest.approx(out["threshold"]) == 0.5
    assert meta.data_config == init.data_config and meta.tta == init.tta
    # It is a whole model: ONNX twin, familiarity for its own weights, rehearsal carried over.
    for name in ("model.onnx", "familiarity.safetensors", rehearsal.REHEARSAL_FILE):
        assert (folder / name).is_file(), name
    r = runner.invoke(app, ["predict", "--model", "site", "--json", str(site)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 16 and all("familiar" in row for row in rows)
    r = runner.invoke(app, ["eval", "--model", "site", "--data", str(site), "--split", "all"])
    assert r.exit_code == 0, r.output  # the site photos refit its head: all in-sample
    assert "Warning: all 16 photos were in the model's training data (in-sample)" in r.stderr
    assert "no familiarity" not in r.stderr and "belongs to other weights" not in r.stderr


def test_a_head_run_killed_before_its_familiarity_stats_leaves_no_model(
    runner, model_copy, tmp_path, smokerdet_home
):
    """The folder is built aside and moved into place whole: no model without its stats."""
    site = _site(tmp_path)
    cmd = [sys.executable, "-m", "smokerdet", *ADAPT, "--init", "tiny", "--data", str(site),
           "--name", "site"]  # fmt: skip
    env = {**os.environ, "SMOKERDET_FAULT": "familiarity.safetensors/opened:1"}
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == -signal.SIGKILL
    assert not (smokerdet_home / "models" / "site").exists()
    r = runner.invoke(app, ["models", "list", "--json"])
    assert "site" not in [m["name"] for m in json.loads(r.stdout)]
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(site), "--name", "site"])
    assert r.exit_code == 0, r.output  # the leftovers of the killed run are no obstacle
    assert (smokerdet_home / "models" / "site" / "familiarity.safetensors").is_file()
    assert not [p for p in (smokerdet_home / "models").iterdir() if "building" in p.name]


def test_expected_accuracy_is_the_out_of_fold_scores_at_the_recipe_threshold(model_copy, tmp_path):
    """The library path, checked against a recomputation from the same pieces."""
    site = _site(tmp_path)
    result = train(TrainConfig(init="tiny", data=site, name="s2", workers=0))
    from smokerdet.inference.backend import open_engine
    from smokerdet.inference.familiarity import pooled_features

    # In the order the recipe read them (training, validation, then the carved test split).
    samples = [Path(row["path"]) for row in result.adaptation["oof"]]
    assert sorted(samples) == sorted(site.glob("*.jpg"))
    y = np.array([int(p.name.startswith("smoking_")) for p in samples])
    init = load_model("tiny")
    x = pooled_features(open_engine("tiny", device="cpu"), samples)
    c = init.model.get_classifier()
    start = HeadFit(c.weight.detach().double().numpy().ravel(), float(c.bias.detach()[0]))
    rows = rehearsal.load(init.path, init.meta)
    # Folds are seeded by --seed (42).
    fold = site_folds([Sample(p, int(label)) for p, label in zip(samples, y, strict=True)], 0, 42)
    oof = adapt.cross_validate_head(x, y, start, rows, fold)
    assert result.threshold == adapt.THRESHOLD == 0.5
    expected = binary_metrics(list(y), list(oof), 0.5)
    got = result.val_metrics
    assert (got.tp, got.fp, got.tn, got.fn) == (expected.tp, expected.fp, expected.tn, expected.fn)
    assert got.roc_auc == pytest.approx(expected.roc_auc)
    got_oof = {row["path"]: row["probability"] for row in result.adaptation["oof"]}
    assert [got_oof[str(p)] for p in samples] == pytest.approx(list(oof), abs=1e-6)
    assert "oof" not in read_meta(result.path).provenance["adaptation"]
    stored = read_meta(result.path).cv_metrics["pooled_oof"]
    assert stored["tp"] == expected.tp and stored["fp"] == expected.fp
    assert stored["roc_auc"] == pytest.approx(expected.roc_auc)


def test_auto_fine_tunes_the_whole_model_above_the_photo_limit(model_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(adapt, "HEAD_MAX_PHOTOS", 10)
    site = _site(tmp_path)
    result = train(
        TrainConfig(init="tiny", data=site, name="big", epochs=1, workers=0, batch_size=8)
    )
    assert result.recipe == "full" and result.epochs_run == 1 and result.history
    result = train(TrainConfig(init="tiny", data=site, name="forced", recipe="head", workers=0))
    assert result.recipe == "head"


def test_recipe_head_needs_init(runner, tmp_path):
    r = runner.invoke(
        app, [*ADAPT, "--no-pretrained", "--data", str(_site(tmp_path)), "--recipe", "head"]
    )
    assert r.exit_code == 2
    assert "--recipe head refits the head of an existing model: it needs --init" in r.stderr


def test_unknown_recipe_is_refused(runner, tmp_path):
    r = runner.invoke(app, [*ADAPT, "--init", "x", "--data", str(tmp_path), "--recipe", "probe"])
    assert r.exit_code == 2 and "--recipe must be one of auto, head, full, not 'probe'" in r.stderr


def test_a_site_of_one_class_is_a_clear_error(runner, model_copy, tmp_path):
    site = _site(tmp_path)
    for p in site.glob("notsmoking_*"):
        p.unlink()
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(site)])
    assert r.exit_code == 1
    assert "Error: too few photos to train: each class needs at least 1 training photo" in r.stderr
    assert " 0 not_smoking" in r.stderr and "Traceback" not in r.output


def test_a_site_of_two_photos_is_a_clear_error(runner, model_copy, tmp_path):
    site = _site(tmp_path, n=1)
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(site)])
    assert r.exit_code == 1, r.output
    assert "Error: too few photos to adapt a model: each class needs at least 2" in r.stderr
    assert "found 1 smoking, 1 not_smoking" in r.stderr and "Traceback" not in r.output


def test_a_small_site_is_adapted_with_a_warning(runner, model_copy, tmp_path):
    site = _site(tmp_path, n=3)
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(site), "--name", "small"])
    assert r.exit_code == 0, r.output
    assert "Warning: only 6 site photos; head adaptation is meant for 16-300" in r.stderr


def test_a_taken_name_is_refused_before_adapting(runner, model_copy, tmp_path):
    site = _site(tmp_path)
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(site), "--name", "tiny"])
    assert r.exit_code == 2, r.output
    assert f"Error: a model named 'tiny' already exists at {model_copy}" in r.stderr
    assert "Adapting" not in r.stderr


def test_cv_larger_than_the_smallest_class_names_the_flag(runner, model_copy, tmp_path):
    site = _site(tmp_path, n=4)
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(site), "--cv", "5"])
    assert r.exit_code == 2, r.output  # a usage error, as with --cv for a fine-tune
    assert "--cv 5 is larger than the smallest class" in r.stderr and "--cv 4 or less" in r.stderr


def test_a_corrupt_rehearsal_file_adapts_without_it_and_says_so(runner, model_copy, tmp_path):
    (model_copy / rehearsal.REHEARSAL_FILE).write_bytes(b"\x00" * 40)
    r = runner.invoke(app, [*ADAPT, "--init", "tiny", "--data", str(_site(tmp_path)), "--json"])
    assert r.exit_code == 0, r.output
    assert "is not valid" in r.stderr and "adapting without rehearsal" in r.stderr
    assert json.loads(r.stdout)["adaptation"]["rehearsal_rows"] == 0


def test_rehearsal_of_another_backbone_is_not_used(model_copy, caplog):
    meta = read_meta(model_copy)
    meta.weights_sha256 = "0" * 64
    assert rehearsal.load(model_copy, meta) is None
    assert "belongs to another backbone" in caplog.text


def _blobs(n, shift, rng):
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 8)) + np.outer(2 * y - 1, np.r_[shift, np.zeros(7)])
    return x, y


def test_rehearsal_keeps_what_the_model_knew_while_few_photos_move_the_head():
    rng = np.random.default_rng(0)
    old_x, old_y = _blobs(400, 2.0, rng)
    start = HeadFit(np.r_[2.0, np.zeros(7)], 0.0)
    # A site where a second feature also tells the classes apart, with a few mislabelled
    # photos: without rehearsal and pull the head chases them and forgets the first feature.
    site_x, site_y = _blobs(12, 0.0, rng)
    site_x[:, 1] += 3 * (2 * site_y - 1)
    site_y[:2] = 1 - site_y[:2]
    rows = rehearsal.Rehearsal(old_x, old_y, "sha")
    kept = fit_head(site_x, site_y, start, rows, pull=0.0)
    loose = fit_head(site_x, site_y, start, None, pull=0.0)
    acc = lambda h: np.mean((h.probs(old_x) >= 0.5) == old_y)  # noqa: E731
    assert acc(kept) > 0.9 > acc(loose)
    assert kept.weight[1] > 0.1  # it did learn the site's own cue


def test_a_strong_pull_leaves_the_head_where_it_was():
    rng = np.random.default_rng(1)
    x, y = _blobs(20, 1.0, rng)
    start = HeadFit(rng.normal(size=8), 0.3)
    held = fit_head(x, y, start, None, pull=1e6)
    assert np.allclose(held.weight, start.weight, atol=1e-3) and held.bias == pytest.approx(
        0.3, abs=1e-3
    )


def _samples(labels: list[int]) -> list[Sample]:
    return [Sample(Path(f"p{i:03d}.jpg"), label) for i, label in enumerate(labels)]


def test_folds_are_stratified_and_capped_by_the_smallest_class():
    y = np.array([1] * 3 + [0] * 20)
    fold = site_folds(_samples(y.tolist()), 0, 0)
    assert fold.max() + 1 == 3
    for i in range(3):
        assert (y[fold == i] == 1).sum() == 1
    assert site_folds(_samples([1] * 30 + [0] * 30), 0, 0).max() + 1 == adapt.MAX_FOLDS
    assert site_folds(_samples([1] * 30 + [0] * 30), 4, 0).max() + 1 == 4  # --cv 4


def test_fine_tuning_flags_the_head_recipe_does_not_use_are_named(runner, model_copy, tmp_path):
    args = [
        *ADAPT,
        "--init",
        "tiny",
        "--data",
        str(_site(tmp_path)),
        "--epochs",
        "5",
        "--lr",
        "1e-4",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "Note: --epochs, --batch-size, --lr only shape a fine-tune" in r.stderr
    assert "--recipe full" in r.stderr
