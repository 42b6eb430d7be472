"""Interrupted runs: resume equals an uninterrupted run, kills never tear files, locks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from smokerdet.checkpoint import load_model, model_lock
from smokerdet.cli import app
from smokerdet.errors import CheckpointError
from smokerdet.resume import RESUME_DIR, read_resume_state
from smokerdet.train import (
    TrainConfig,
    TrainingInterrupted,
    TrainReporter,
    resume_training,
    train,
)


def tiny(data: Path, name: str, epochs: int = 3, workers: int = 0) -> TrainConfig:
    return TrainConfig(
        arch="resnet10t",
        pretrained=False,
        img_size=32,
        epochs=epochs,
        batch_size=8,
        workers=workers,
        data=data,
        name=name,
        patience=0,
        ema=0.9,
        lp_epochs=1,
    )


class StopAt(TrainReporter):
    """Presses Ctrl-C when an epoch starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_ends_like_an_uninterrupted_one(flat_data, workers):
    full = train(tiny(flat_data, "full", workers=workers))
    with pytest.raises(TrainingInterrupted) as e:
        train(tiny(flat_data, "cut", workers=workers), StopAt(3))
    assert e.value.exit_code == 130
    assert "smokerdet train --resume cut" in e.value.hint
    assert (
        read_resume_state(Path(os.environ["SMOKERDET_HOME"]) / "models" / "cut").json["epoch"] == 2
    )
    resumed = resume_training("cut")
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in full.history]
    assert resumed.val_metrics == full.val_metrics and resumed.threshold == full.threshold
    a, b = load_model("cut").model.state_dict(), load_model("full").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert not (resumed.path / RESUME_DIR).exists()  # finished: nothing left to resume


def test_nothing_to_resume(runner, model_copy):
    r = runner.invoke(app, ["train", "--resume", "tiny"])
    assert r.exit_code == 1
    assert "Error: nothing to resume for 'tiny': its training finished" in r.stderr
    r = runner.invoke(app, ["train", "--resume", "ghost"])
    assert r.exit_code == 1 and "no such interrupted run" in r.stderr


def _train_cmd(data: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "smokerdet", "train", "--arch", "resnet10t", "--no-pretrained",
            "--img-size", "32", "--epochs", "4", "--batch-size", "8", "--workers", "0",
            "--patience", "0", "--data", str(data), "--name", name, *extra]  # fmt: skip


def test_sigint_exits_130_with_a_resume_hint(flat_data, smokerdet_home):
    proc = subprocess.Popen(
        _train_cmd(flat_data, "sig"), stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    state = smokerdet_home / "models" / "sig" / RESUME_DIR / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not state.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Error: training of sig interrupted" in err
    assert "Hint: resume with: smokerdet train --resume sig" in err
    with FileLock(smokerdet_home / "models" / ".sig.lock", timeout=0):
        pass  # the dying run released its lock


def test_sigkill_at_random_points_never_tears_anything(flat_data, smokerdet_home):
    rng = random.Random(0)
    folder = smokerdet_home / "models" / "k"
    kills = 0
    for _ in range(6):
        extra = (
            ["--resume", "k"] if (folder / RESUME_DIR / "state.json").exists() else ["--overwrite"]
        )
        cmd = _train_cmd(flat_data, "k", *extra) if extra[0] != "--resume" else [
            sys.executable, "-m", "smokerdet", "train", "--resume", "k"]  # fmt: skip
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 6.0))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        if (folder / "model.json").exists():
            load_model(folder)  # the old model or the new one, never a torn one
        if (folder / RESUME_DIR / "state.json").exists():
            read_resume_state(folder)
    assert kills >= 3
    # whatever happened, the run can be finished: resumed, or started again
    if (folder / RESUME_DIR / "state.json").exists():
        resume_training("k")
    elif not (folder / "model.json").exists():
        subprocess.run(_train_cmd(flat_data, "k", "--overwrite"), check=True, capture_output=True)
    assert load_model(folder).meta.arch == "resnet10t"


def test_a_second_run_on_the_same_name_is_refused_and_a_stale_lock_is_not(
    runner, flat_data, smokerdet_home
):
    models = smokerdet_home / "models"
    with model_lock(models / "busy"):
        r = runner.invoke(
            app, ["train", "--no-pretrained", "--data", str(flat_data), "--name", "busy"]
        )
        assert r.exit_code == 2
        assert "Error: another training run is writing model 'busy'" in r.stderr
        assert "Hint: wait for it to finish, or choose another --name" in r.stderr
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (models / ".stale.lock").write_text(str(dead.pid))
    cfg = tiny(flat_data, "stale", epochs=1)
    assert train(cfg).name == "stale"


def test_a_failed_write_keeps_the_previous_model(runner, model_copy, flat_data, monkeypatch):
    before = json.loads((model_copy / "model.json").read_text())
    real_replace = os.replace

    def disk_full(src, dst):
        if str(dst).endswith("model.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", disk_full)
    r = runner.invoke(app, [*_train_cmd(flat_data, "tiny", "--overwrite")[3:]])
    monkeypatch.setattr(os, "replace", real_replace)
    assert r.exit_code == 1, r.output
    assert "cannot save the model to" in r.stderr and "No space left on device" in r.stderr
    assert "the previous files are kept" in r.stderr
    loaded = load_model("tiny")
    assert loaded.meta.weights_sha256 == before["weights_sha256"]


def test_torn_resume_state_is_refused(flat_data, smokerdet_home):
    with pytest.raises(TrainingInterrupted):
        train(tiny(flat_data, "torn"), StopAt(3))
    folder = smokerdet_home / "models" / "torn" / RESUME_DIR
    info = json.loads((folder / "state.json").read_text())
    (folder / info["tensors_file"]).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="torn"):
        resume_training("torn")
