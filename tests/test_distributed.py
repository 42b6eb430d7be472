"""Real torchrun runs on CPU (gloo): training, sharded predict and eval, merge and resume.

Each launch starts two real processes, so these tests share a few runs through module-scoped
fixtures instead of starting their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_flat
from safetensors.torch import load_file

from smokerdet.checkpoint import load_model
from smokerdet.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent
TRAIN = [
    "train",
    "--arch",
    "resnet10t",
    "--no-pretrained",
    "--img-size",
    "32",
    "--batch-size",
    "4",
    "--workers",
    "0",
]


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SMOKERDET_HOME=str(home),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )
    env.pop("SMOKERDET_DEBUG", None)
    return env


def torchrun_cmd(args: list[str], n: int = 2) -> list[str]:
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*run, "--nproc_per_node", str(n), "-m", "smokerdet", *args]


def launch(args: list[str], home: Path, n: int | None = 2) -> subprocess.CompletedProcess[str]:
    """``smokerdet ARGS`` under torchrun with ``n`` processes, or plainly when ``n`` is None."""
    cmd = torchrun_cmd(args, n) if n else [sys.executable, "-m", "smokerdet", *args]
    return subprocess.run(
        cmd, env=env_for(home), capture_output=True, text=True, timeout=240, cwd=ROOT
    )


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One 2-process training run, and the same run again."""
    root = tmp_path_factory.mktemp("ddp")
    home, data = root / "home", write_flat(root / "data", n_per_class=12)
    runs = {}
    for name in ("a", "b"):
        r = launch([*TRAIN, "--epochs", "2", "--data", str(data), "--name", name, "--json"], home)
        assert r.returncode == 0, r.stderr
        runs[name] = json.loads(r.stdout)  # one JSON document: only rank 0 prints
    return {"home": home, "data": data, "runs": runs}


def test_ddp_model_loads_and_its_metrics_equal_a_single_process_eval(ddp, monkeypatch):
    home, data = ddp["home"], ddp["data"]
    monkeypatch.setenv("SMOKERDET_HOME", str(home))
    folder = home / "models" / "a"
    loaded = load_model(str(folder))
    assert loaded.meta.arch == "resnet10t"
    assert not (folder / "resume").exists()
    report = evaluate(model=str(folder), data=data, split="val")
    stored = loaded.meta.val_metrics
    for key in ("tp", "fp", "tn", "fn", "n", "accuracy", "precision", "recall", "f1"):
        assert stored[key] == report.metrics.to_dict()[key], key
    assert stored["roc_auc"] == pytest.approx(report.metrics.roc_auc)
    assert stored["n"] == len(report.probabilities) > 0


def test_a_second_identical_ddp_run_gives_identical_tensors(ddp):
    home = ddp["home"]
    a = load_file(home / "models" / "a" / "model.safetensors")
    b = load_file(home / "models" / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[h["train_loss"] for h in ddp["runs"][n]["history"]] for n in ("a", "b")]
    assert losses[0] == losses[1]


def test_sigint_to_the_launcher_leaves_a_resumable_run(tmp_path):
    home, data = tmp_path / "home", write_flat(tmp_path / "data", n_per_class=8)
    args = [*TRAIN, "--epochs", "12", "--data", str(data), "--name", "cut"]
    proc = subprocess.Popen(
        torchrun_cmd(args),
        env=env_for(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    state = home / "models" / "cut" / "resume" / "state.json"
    deadline = time.monotonic() + 180
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    # Rank 0 explains what is kept; rank 1 stays quiet.
    assert err.count("Error: training of cut interrupted during epoch") == 1, err
    assert "resume with: smokerdet train --resume cut" in err
    r = launch(["train", "--resume", "cut", "--json"], home)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["epochs_run"] == 12
    assert load_model(str(home / "models" / "cut")).meta.arch == "resnet10t"
    assert not (home / "models" / "cut" / "resume").exists()
