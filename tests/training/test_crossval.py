"""``smokerdet train --cv K``: folds, pooled out-of-fold threshold, the final model."""

import json
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, write_flat

from smokerdet.cli import app
from smokerdet.data import Sample, stratified_folds
from smokerdet.data.layout import find_dataset
from smokerdet.errors import ConfigError
from smokerdet.metrics import best_threshold, binary_metrics
from smokerdet.training import (
    TrainConfig,
    TrainingInterrupted,
    TrainReporter,
    cross_validate,
    resume_training,
)


@pytest.fixture
def data(tmp_path):
    return write_flat(tmp_path / "flat", n_per_class=10)


def test_cv_2_saves_a_final_model_with_the_pooled_threshold(runner, smokerdet_home, data):
    args = [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "cvm", "--cv", "2", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    meta = json.loads((smokerdet_home / "models" / "cvm" / "model.json").read_text())

    cv = meta["cv_metrics"]
    assert "cross-validated" in cv["kind"] and "not a held-out test" in cv["kind"]
    assert cv["k"] == 2 and len(cv["folds"]) == 2
    assert set(cv["mean"]) == set(cv["sd"]) >= {"accuracy", "f1", "roc_auc"}
    assert meta["val_metrics"] == {}  # nothing was held out from the final model
    assert meta["train_args"]["epochs"] == cv["epochs"] and meta["train_args"]["patience"] == 0

    # Every training and validation photo is scored once, out of fold; the test split never.
    splits = find_dataset(data, seed=42)
    oof = out["cv"]["oof"]
    assert sorted(o["path"] for o in oof) == sorted(str(s.path) for s in splits.train + splits.val)
    ys, ps = [o["label"] for o in oof], [o["probability"] for o in oof]
    assert meta["threshold"] == pytest.approx(best_threshold(ys, ps))
    assert cv["pooled_oof"]["f1"] == pytest.approx(binary_metrics(ys, ps, meta["threshold"]).f1)

    # The fold models are gone; the final model predicts.
    left = [p.name for p in (smokerdet_home / "models").iterdir()]
    assert [n for n in left if not n.startswith(".")] == ["cvm"]
    assert not [n for n in left if "fold" in n], left
    photo = next(data.glob("smoking_*.jpg"))
    r = runner.invoke(app, ["predict", "--model", "cvm", "--json", str(photo)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.splitlines()[0])["threshold"] == pytest.approx(meta["threshold"])


def test_cv_table_shows_folds_and_mean_sd(runner, data):
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "t", "--cv", "2"])
    assert r.exit_code == 0, r.output
    for word in ("fold", "epochs", "threshold", "acc", "F1", "AUC", "mean ± sd", "pooled"):
        assert word in r.stdout, word
    assert "threshold (cross-validated)" in r.stdout


def test_folds_are_stratified_disjoint_and_seeded(data):
    samples = find_dataset(data).train
    folds = stratified_folds(samples, 3, seed=1)
    assert sorted(str(s.path) for f in folds for s in f) == sorted(str(s.path) for s in samples)
    for fold in folds:
        assert {s.label for s in fold} == {0, 1}
    assert stratified_folds(samples, 3, seed=1) == folds != stratified_folds(samples, 3, seed=2)


def test_folds_of_a_seed_stay_those_the_shipped_model_was_built_on():
    """The shipped model's folds came from seed 7: the dealing order must never change."""
    photos = [
        Sample(Path(f"{prefix}_{i:02d}.jpg"), int(prefix == "smoking"))
        for prefix in ("smoking", "notsmoking")
        for i in range(5)
    ]
    folds = [[s.path.name for s in fold] for fold in stratified_folds(photos[::-1], 3, seed=7)]
    assert folds == [
        ["notsmoking_00.jpg", "notsmoking_02.jpg", "smoking_00.jpg", "smoking_01.jpg"],
        ["notsmoking_03.jpg", "notsmoking_04.jpg", "smoking_03.jpg", "smoking_04.jpg"],
        ["notsmoking_01.jpg", "smoking_02.jpg"],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cv", "1"], "--cv must be 0 (off) or at least 2 folds, got 1"),
        (["--cv", "-3"], "--cv must be 0 (off) or at least 2 folds, got -3"),
        (["--cv", "50"], "--cv 50 is larger than the smallest class"),
        (["--cv", "2", "--resume", "x"], "--cv and --resume can't be combined"),
    ],
)
def test_bad_cv_is_a_usage_error(runner, smokerdet_home, data, args, message):
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), *args])
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert not (smokerdet_home / "models").exists() or not any(
        (smokerdet_home / "models").iterdir()
    )


def test_cv_larger_than_smallest_class_gives_the_counts(runner, tmp_path):
    data = write_flat(tmp_path / "few", n_per_class=5)
    r = runner.invoke(app, [*TINY_TRAIN_ARGS, "--data", str(data), "--cv", "5"])
    assert r.exit_code == 2, r.output
    pool = find_dataset(data, seed=42)
    n = sum(s.label for s in pool.train + pool.val)
    assert f"found {n} smoking, {len(pool.train + pool.val) - n} not_smoking" in r.stderr
    assert "Hint: use --cv" in r.stderr


class StopInFinalRun(TrainReporter):
    """Ctrl-C after the first epoch of the final model (the third run of a 2-fold --cv)."""

    runs = 0

    def on_start(self, info):
        self.runs += 1

    def on_epoch_end(self, stats):
        if self.runs == 3:
            raise KeyboardInterrupt


def test_interrupted_cv_run_says_start_again_and_cannot_be_resumed(data):
    cfg = TrainConfig(
        arch="resnet10t",
        pretrained=False,
        img_size=32,
        epochs=2,
        batch_size=8,
        workers=0,
        data=data,
        name="cvi",
        cv=2,
        patience=0,
    )
    with pytest.raises(TrainingInterrupted, match="cross-validation of cvi interrupted") as e:
        cross_validate(cfg, StopInFinalRun())
    assert "start again with the same command" in e.value.hint
    with pytest.raises(ConfigError, match="final model of a --cv run, which can't be resumed"):
        resume_training("cvi")
