"""Real torchrun runs on CPU (gloo): training, sharded predict and eval, merge and resume.

Each launch starts two real processes, so these tests share a few runs through module-scoped
fixtures instead of starting their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import write_flat
from safetensors.torch import load_file
from typer.testing import CliRunner

from smokerdet.cli import app
from smokerdet.models.registry import load_model
from smokerdet.scoring.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[2]
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
    args = [*TRAIN, "--epochs", "5", "--data", str(data), "--name", "cut"]
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
    assert result["epochs_run"] == 5
    assert load_model(str(home / "models" / "cut")).meta.arch == "resnet10t"
    assert not (home / "models" / "cut" / "resume").exists()


def test_cv_and_the_head_recipe_under_torchrun_write_one_model_each(ddp, tmp_path):
    """The recipe is chosen once, inside the process group: --cv trains its fold models and its
    final one data-parallel (one rank writes, scores and removes the folds), and the head
    recipe refits on one rank and hands its result to the other."""
    home, data = tmp_path / "home", ddp["data"]
    shutil.copytree(ddp["home"] / "models" / "a", home / "models" / "a")
    args = [*TRAIN, "--epochs", "1", "--data", str(data), "--name", "cvd", "--cv", "2", "--json"]
    r = launch(args, home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)  # one JSON document: only rank 0 prints
    assert out["cv"]["k"] == 2 and len(out["cv"]["oof"]) == 20  # every train+val photo, once
    meta = json.loads((home / "models" / "cvd" / "model.json").read_text())
    assert meta["threshold"] == out["threshold"] == out["cv"]["threshold"]
    assert (home / "models" / "cvd" / "familiarity.safetensors").is_file()

    site = write_flat(tmp_path / "site", n_per_class=6)
    r = launch(
        [*TRAIN[:1], "--workers", "0", "--init", "a", "--data", str(site), "--name", "s", "--json"],
        home,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["recipe"] == "head"
    assert r.stderr.count("Adapting a head-only") == 1
    assert sorted(p.name for p in (home / "models").iterdir() if not p.name.startswith(".")) == [
        "a",
        "cvd",
        "s",
    ]
    assert not [p for p in (home / "models").iterdir() if "fold" in p.name]


# ---------------------------------------------------------------------------------------------
# predict and eval: torchrun, --shard + --merge, --output + --resume


@pytest.fixture(scope="module")
def photos(ddp, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos with a corrupt file in each half, so that each rank and shard meets one."""
    folder = write_flat(tmp_path_factory.mktemp("photos") / "in", n_per_class=7)
    (folder / "notsmoking_0003.jpg").write_bytes(b"not a jpeg")  # first half
    (folder / "smoking_0005.jpg").write_bytes(b"truncated")  # second half
    return folder


def cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """``smokerdet ARGS`` in this process (through ``main()``, as a user runs it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMOKERDET_HOME", str(home))
        r = CliRunner().invoke(app, args)
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def test_predict_under_torchrun_and_merged_shards_equal_one_process(ddp, photos, tmp_path):
    home = ddp["home"]
    args = ["predict", str(photos), "--model", "a", "--workers", "0", "--json"]
    single = cli(args, home)
    assert single.returncode == 3, single.stderr
    rows = [json.loads(line) for line in single.stdout.splitlines()]
    assert len(rows) == 14 and sum(r["error"] is not None for r in rows) == 2

    both = launch(args, home)
    assert both.stdout == single.stdout
    # Every rank ends; the main one with the run's code (torchrun itself exits 1).
    assert both.returncode == 1 and "exitcode  : 3" in both.stderr

    parts = [tmp_path / f"part{i}.jsonl" for i in range(2)]
    for i, part in enumerate(parts):
        r = cli([*args[:-1], "--shard", f"{i}/2", "--output", str(part)], home)
        assert r.returncode == 3, r.stderr  # each half holds a corrupt file
    merged = cli(["predict", "--merge", str(parts[1]), str(parts[0]), "--json"], home)
    assert merged.returncode == 3
    assert merged.stdout == single.stdout


def test_more_ranks_and_shards_than_inputs(ddp, photos, tmp_path):
    home = ddp["home"]
    two = [str(photos / "smoking_0000.jpg"), str(photos / "notsmoking_0000.jpg")]
    args = ["predict", *two, "--model", "a", "--workers", "0", "--json"]
    single = cli(args, home)
    assert single.returncode == 0
    three = launch(args, home, n=3)
    assert three.returncode == 0, three.stderr
    assert three.stdout == single.stdout
    parts = [tmp_path / f"p{i}.jsonl" for i in range(3)]
    for i, part in enumerate(parts):
        assert cli([*args[:-1], "--shard", f"{i}/3", "-o", str(part)], home).returncode == 0
    assert len(parts[0].read_text().splitlines()) == 1  # only the header: an empty part
    assert cli(["predict", "--merge", *map(str, parts), "--json"], home).stdout == single.stdout


def test_eval_under_torchrun_equals_one_process(ddp, photos):
    home, data = ddp["home"], ddp["data"]
    args = ["eval", "--model", "a", "--data", str(photos), "--split", "all", "--workers", "0"]
    single = cli([*args, "--json"], home)
    both = launch([*args, "--json"], home)
    assert single.returncode == both.returncode == 0, both.stderr
    assert both.stdout == single.stdout
    report = json.loads(single.stdout)
    assert report["n"] == 12 and len(report["skipped"]) == 2
    assert data.exists()


def test_merge_refuses_parts_of_another_model(ddp, photos, tmp_path):
    home = ddp["home"]
    base = ["predict", str(photos), "--workers", "0"]
    p0, p1 = tmp_path / "p0.jsonl", tmp_path / "p1.jsonl"
    cli([*base, "--model", "a", "--shard", "0/2", "-o", str(p0)], home)
    cli([*base, "--model", "b", "--shard", "1/2", "-o", str(p1)], home)
    r = cli(["predict", "--merge", str(p0), str(p1)], home)
    assert r.returncode == 1
    assert "were made from different models" in r.stderr


@pytest.mark.parametrize("spec", ["3/2", "0/0", "a/b"])
def test_bad_shard_spec_exits_2_naming_the_flag(ddp, photos, spec):
    r = cli(["predict", str(photos), "--model", "a", "--shard", spec], ddp["home"])
    assert r.returncode == 2
    assert "Error: --shard" in r.stderr


def test_resume_after_a_kill_equals_an_uninterrupted_run(ddp, tmp_path):
    home = ddp["home"]
    photos = write_flat(tmp_path / "many", n_per_class=15)
    base = ["predict", str(photos), "--model", "a", "--workers", "0", "--batch-size", "1"]
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    assert cli([*base, "--output", str(full)], home).returncode == 0
    cmd = [sys.executable, "-m", "smokerdet", *base, "--output", str(cut)]
    proc = subprocess.Popen(cmd, env=env_for(home), cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if cut.exists() and cut.read_bytes().count(b"\n") >= 6:  # header + 5 rows
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    lines = cut.read_bytes().count(b"\n")
    assert 6 <= lines < 31
    with cut.open("ab") as f:  # and a kill in the middle of a line
        f.write(b'{"path": "torn')
    r = cli([*base, "--output", str(cut), "--resume"], home)
    assert r.returncode == 0, r.stderr
    assert f"({lines - 1} already done)" in r.stderr
    assert cut.read_bytes() == full.read_bytes()
    paths = [json.loads(line)["path"] for line in cut.read_text().splitlines()[1:]]
    assert len(paths) == len(set(paths)) == 30


def test_output_exists_without_resume_is_refused(ddp, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("precious\n")
    r = cli(["predict", str(photos), "--model", "a", "--output", str(out)], ddp["home"])
    assert r.returncode == 2
    assert "already exists" in r.stderr and "--resume" in r.stderr
    assert out.read_text() == "precious\n"


ENDING = """
import atexit, sys
from smokerdet import distributed
from smokerdet.cli import main
atexit.register(lambda: print("interpreter shutdown ran", file=sys.stderr))
distributed._joined = {joined}
sys.argv = ["smokerdet", *{args!r}]
main()
"""


@pytest.mark.parametrize("joined", [False, True])
@pytest.mark.parametrize(("args", "code"), [(["--version"], 0), (["models", "remove", "nope"], 1)])
def test_a_process_that_joined_a_group_ends_without_the_interpreter_shutdown(
    joined, args, code, tmp_path
):
    # DDP leaves gloo's threads alive after destroy_process_group, and they can abort the
    # interpreter's shutdown (SIGABRT after a successful run): the console entry point must
    # skip it for such a process, with its output and exit code intact.
    script = ENDING.format(joined=joined, args=args)
    r = subprocess.run([sys.executable, "-c", script], env=env_for(tmp_path / "home"),
                       capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert r.returncode == code, r.stderr
    assert ("interpreter shutdown ran" in r.stderr) is not joined
    if code == 0:
        assert r.stdout.startswith("smokerdet ")
    else:
        assert "Error: " in r.stderr


def test_hard_exit_reads_the_code_as_sys_exit_does(tmp_path):
    script = "from smokerdet import distributed; print('kept', end=''); distributed.hard_exit({})"
    for code, status in (("None", 0), ("4", 4), ("'bad thing'", 1)):
        r = subprocess.run([sys.executable, "-c", script.format(code)],
                           env=env_for(tmp_path), capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == status
        assert r.stdout == "kept"  # flushed before the process ended
        assert ("bad thing" in r.stderr) is (status == 1)
