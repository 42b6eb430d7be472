"""Interrupted runs: resume equals an uninterrupted run, kills never tear files, locks.

The kill tests run training in children forked from one server process (this file run as a
script: ``python tests/proofs/test_reliability.py``), which imports torch and smokerdet once: a run
killed at a point then costs its own work, not seconds of imports. The kills are aimed with
:mod:`smokerdet.faults`: a reference run traces every write point it reaches, and each kill
names one of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from conftest import write_archive_layout
from filelock import FileLock

from smokerdet import faults
from smokerdet.cli import app
from smokerdet.errors import CheckpointError
from smokerdet.inference.familiarity import FAMILIARITY_FILE
from smokerdet.models.checkpoint import META_FILE, WEIGHTS_FILE, model_lock, save_model
from smokerdet.models.registry import load_model
from smokerdet.training import (
    TrainConfig,
    TrainingInterrupted,
    TrainReporter,
    resume_training,
    train,
)
from smokerdet.training.resume import RESUME_DIR, read_resume_state, write_resume_files


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


class Recorder(TrainReporter):
    """Records what a run did: the epochs it started, each step's loss; presses Ctrl-C when
    epoch ``stop_at`` starts."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.epochs: list[int] = []
        self.losses: list[float] = []

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        if epoch == self.stop_at:
            raise KeyboardInterrupt
        self.epochs.append(epoch)

    def on_step(self, loss: float) -> None:
        self.losses.append(loss)


def StopAt(epoch: int) -> Recorder:  # noqa: N802 (reads as the reporter it builds)
    return Recorder(stop_at=epoch)


def comparable(history: list[Any]) -> list[dict[str, Any]]:
    """Every number of every epoch but the timings."""
    rows = [h if isinstance(h, dict) else asdict(h) for h in history]
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows]


@pytest.fixture(scope="module")
def late_best_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough validation images (20) that the kept epoch is a late one, not a tie won early."""
    root = tmp_path_factory.mktemp("late-best")
    return write_archive_layout(root / "data", {"Training": 12, "Validation": 10, "Testing": 1})


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_ends_like_an_uninterrupted_one(late_best_data, smokerdet_home, workers):
    # epoch 1 trains the head, epochs 2-4 fine-tune with EMA; the cut comes as epoch 3 starts
    full_steps = Recorder()
    full = train(tiny(late_best_data, "full", workers=workers), full_steps)
    assert full.best_epoch > 2, "the kept epoch must come after the interruption"
    with pytest.raises(TrainingInterrupted) as e:
        train(tiny(late_best_data, "cut", workers=workers), StopAt(3))
    assert e.value.exit_code == 130
    assert "smokerdet train --resume cut" in e.value.hint
    assert read_resume_state(smokerdet_home / "models" / "cut").epoch == 2

    resumed_steps = Recorder()
    resumed = resume_training("cut", resumed_steps)
    assert resumed_steps.epochs == [3, 4]  # it resumed: neither retrained nor skipped an epoch
    steps = len(full_steps.losses) // 4
    assert steps == 3 and resumed_steps.losses == full_steps.losses[2 * steps :]
    assert comparable(resumed.history) == comparable(full.history)  # losses, lr, metrics
    assert (resumed.best_epoch, resumed.epochs_run) == (full.best_epoch, 4)
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
    with FileLock(smokerdet_home / "locks" / "sig.lock", timeout=0):
        pass  # the dying run released its lock


# ---------------------------------------------------------------------------------------------
# Kills aimed inside every write


class RunServer:
    """This file run as a script: it forks one child per run, which trains and may be killed."""

    def __init__(self) -> None:
        # The script imports the shared test helpers (conftest), which live one folder up.
        helpers = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (helpers, os.environ.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": path},
        )

    def run(self, home: Path, *, fault: str = "", trace: Path | None = None, **job: Any) -> int:
        """Run ``job`` in a fresh child; returns its exit status (-9: SIGKILLed)."""
        env = {
            "SMOKERDET_HOME": str(home),
            "SMOKERDET_FAULT": fault,
            "SMOKERDET_FAULT_LOG": str(home / "fault.log"),
            "SMOKERDET_FAULT_TRACE": str(trace or ""),
        }
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({**job, "env": env}) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class PointsRecorder(Recorder):
    """A child's reporter: also a fault point at each epoch start and each step, and the
    version of the model saved by each epoch that improved."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.saved: list[list[Any]] = []

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        super().on_epoch_start(epoch, total, steps, phase)
        faults.point("epoch/start")

    def on_step(self, loss: float) -> None:
        super().on_step(loss)
        faults.point("train/step")

    def on_epoch_end(self, stats: Any) -> None:
        if stats.improved:  # keep a copy of each version saved
            copy = self.folder.parent / f"{self.folder.name}-epoch{stats.epoch}.safetensors"
            shutil.copyfile(self.folder / WEIGHTS_FILE, copy)
            meta = json.loads((self.folder / META_FILE).read_text())
            self.saved.append([meta["threshold"], meta["val_metrics"], str(copy)])


def same_version(loaded: Any, saved: list[Any]) -> bool:
    """Whether a loaded model is a saved version: its tensors, and the threshold and metrics
    that go with them. (Not the weights' SHA-256: safetensors writes its metadata in a random
    order, so equal tensors can make different bytes.)"""
    from safetensors.torch import load_file

    threshold, metrics, weights = saved
    if (loaded.meta.threshold, loaded.meta.val_metrics) != (threshold, metrics):
        return False
    want = load_file(weights)
    got = loaded.model.state_dict()
    return set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def _run_job(job: dict[str, Any]) -> NoReturn:
    """In a forked child: train or resume as ``job`` says, write what happened, exit."""
    code = 1
    try:
        torch.set_num_threads(1)  # every run alike, the reference and the killed ones
        os.environ.update(job["env"])
        folder = Path(job["env"]["SMOKERDET_HOME"]) / "models" / job["name"]
        rec = PointsRecorder(folder)
        if job["resume"]:
            result = resume_training(job["name"], rec)
        else:
            result = train(TrainConfig(**job["config"]), rec)
        done = {"result": result.to_dict(), "epochs": rec.epochs, "losses": rec.losses}
        Path(job["out"]).write_text(json.dumps({**done, "saved": rec.saved}))
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def serve() -> None:
    """Read one job a line; fork a child for it, wait, print its exit status."""
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _run_job(json.loads(line))
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


@pytest.fixture(scope="module")
def run_server() -> Any:
    server = RunServer()
    yield server
    server.close()


@dataclass
class Reference:
    """An uninterrupted run, and every fault point it reached, epoch by epoch."""

    config: dict[str, Any]
    folder: Path
    segments: list[list[str]]  # segments[e - 1]: the points of epoch e, from its start
    done: dict[str, Any]  # what the run returned, and the versions it saved

    def position(self, epoch: int, index: int) -> list[str]:
        """The points reached from the run's start up to ``index`` of ``epoch``."""
        return [p for seg in self.segments[: epoch - 1] for p in seg] + self.segments[epoch - 1][
            : index + 1
        ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, run_server: RunServer) -> Reference:
    root = tmp_path_factory.mktemp("kills")
    data = write_archive_layout(root / "data", {"Training": 8, "Validation": 6, "Testing": 1})
    # a learning rate at which every fine-tuning epoch improves, so every one of them saves
    config = {**asdict(tiny(data, "k")), "data": str(data), "lr": 2e-3, "overwrite": True}
    home, trace, out = root / "home", root / "trace.txt", root / "reference.json"
    status = run_server.run(home, trace=trace, resume=False, name="k", config=config, out=str(out))
    assert status == 0
    points = trace.read_text().split()
    assert points[0] == "epoch/start"
    segments: list[list[str]] = []
    for p in points:
        if p == "epoch/start":
            segments.append([])
        segments[-1].append(p)
    return Reference(config, home / "models" / "k", segments, json.loads(out.read_text()))


def aim(ref: Reference) -> list[tuple[int, int]]:
    """(epoch, index among its points) of each kill.

    Every point of every write in the first epoch that replaces a saved model; in the others,
    a step in the middle of the epoch and the moment the resume state is complete (or, in the
    last epoch, the new model). Each epoch's last kill lands once its resume state is in
    place, so every run starts in the epoch its kill aims at. (The last epoch's resume state
    is that of a run finishing its folder: see
    :func:`test_a_run_killed_while_it_finishes_its_folder_is_finished_by_resume`.)
    """
    full = next(e for e, seg in enumerate(ref.segments, 1) if "save_model/previous-kept" in seg)
    last = len(ref.segments)
    plan = []
    for epoch, seg in enumerate(ref.segments, 1):
        steps = [i for i, p in enumerate(seg) if p == "train/step"]
        if epoch > 1:
            plan.append((epoch, steps[len(steps) // 2]))
        if epoch == last:  # its points up to the new model; after it, the run finishes
            seg = seg[: seg.index(f"{META_FILE}/renamed") + 1]
        plan += [
            (epoch, i)
            for i, p in enumerate(seg)
            if p not in ("epoch/start", "train/step")
            and (epoch == full or p in ("state.json/renamed", f"{META_FILE}/renamed"))
            and (epoch in (full, last) or p == "state.json/renamed")
        ]
    return plan


def phase_of(point: str) -> str:
    """The write (or the fitting) a point belongs to, for the tally."""
    name = point.split("/")[0]
    return {
        "train": "fitting an epoch",
        "save_model": "save_model: old weights set aside",
        WEIGHTS_FILE: "save_model: weights",
        META_FILE: "save_model: model.json",
        "state.json": "resume state: state.json",
    }.get(name, "resume state: tensors" if re.fullmatch(r"state-\d{4}\.safetensors", name) else "?")


def test_kills_inside_every_write_leave_old_or_new_and_resume_ends_like_no_kill(
    run_server, reference, smokerdet_home
):
    ref, folder, log = reference, smokerdet_home / "models" / "k", smokerdet_home / "fault.log"
    assert [seg.count(f"{META_FILE}/renamed") for seg in ref.segments] == [0, 1, 1, 1]
    landed: Counter[str] = Counter()
    loads = resume_reads = after_first_model = 0
    for epoch, index in aim(ref):
        before = (
            read_resume_state(folder).epoch if (folder / RESUME_DIR / "state.json").is_file() else 0
        )
        assert before == epoch - 1  # this run starts in the epoch it aims at
        point = ref.segments[epoch - 1][index]
        n = ref.segments[epoch - 1][: index + 1].count(point)
        log.unlink(missing_ok=True)
        status = run_server.run(
            smokerdet_home, fault=f"{point}:{n}", resume=before > 0, name="k",
            config=ref.config, out=str(smokerdet_home / "out.json"),
        )  # fmt: skip
        assert status == -signal.SIGKILL, f"the run aimed at {point} (epoch {epoch}) was not killed"
        assert log.read_text() == f"{point} {n}\n"  # it died where it aimed, nowhere else
        landed[phase_of(point)] += 1

        so_far = ref.position(epoch, index)
        saves = so_far.count(f"{META_FILE}/renamed")
        if saves:  # a model exists: it loads as the last version whose model.json is in place
            loaded = load_model(folder)
            assert same_version(loaded, ref.done["saved"][saves - 1]), f"{point}, epoch {epoch}"
            loads += 1
            after_first_model += 1
        else:
            assert not (folder / META_FILE).exists()
        states = so_far.count("state.json/renamed")
        if states:
            assert read_resume_state(folder).epoch == states
            resume_reads += 1
    assert after_first_model >= 20 and loads == after_first_model and resume_reads >= 20

    final = smokerdet_home / "final.json"
    status = run_server.run(smokerdet_home, resume=True, name="k", config={}, out=str(final))
    assert status == 0
    got, want = json.loads(final.read_text()), ref.done
    last = len(ref.segments)
    assert got["epochs"] == [last]  # the resumed call ran the last epoch only
    assert got["losses"] == want["losses"][-len(got["losses"]) :]
    for key in ("best_epoch", "epochs_run", "threshold", "val_metrics", "stopped_early"):
        assert got["result"][key] == want["result"][key], key
    assert comparable(got["result"]["history"]) == comparable(want["result"]["history"])
    assert same_version(load_model(folder), want["saved"][-1])
    assert not (folder / RESUME_DIR).exists()
    print("\nkill points:", sum(landed.values()), dict(sorted(landed.items())))


def test_a_run_killed_while_it_finishes_its_folder_is_finished_by_resume(
    run_server, reference, smokerdet_home
):
    """After its last epoch a run writes its familiarity stats, then removes its resume state:
    killed in between, it is not finished, and its resume writes what was missing."""
    ref, folder = reference, smokerdet_home / "models" / "k"
    last = ref.segments[-1]
    stats = f"{FAMILIARITY_FILE}/opened"
    assert last.index("state.json/renamed") < last.index(stats)  # the state comes first
    status = run_server.run(
        smokerdet_home, fault=f"{stats}:1", resume=False, name="k", config=ref.config,
        out=str(smokerdet_home / "out.json"),
    )  # fmt: skip
    assert status == -signal.SIGKILL
    assert read_resume_state(folder).epoch == len(ref.segments)
    assert not (folder / FAMILIARITY_FILE).exists()

    final = smokerdet_home / "final.json"
    status = run_server.run(smokerdet_home, resume=True, name="k", config={}, out=str(final))
    assert status == 0
    got, want = json.loads(final.read_text()), ref.done
    assert got["epochs"] == [] and got["losses"] == []  # every epoch had run
    for key in ("best_epoch", "epochs_run", "threshold", "val_metrics", "stopped_early"):
        assert got["result"][key] == want["result"][key], key
    assert comparable(got["result"]["history"]) == comparable(want["result"]["history"])
    assert same_version(load_model(folder), want["saved"][-1])
    assert (folder / FAMILIARITY_FILE).is_file() and not (folder / RESUME_DIR).exists()


def test_every_file_of_a_save_is_fsynced_under_a_temp_name_then_renamed(model_copy, monkeypatch):
    """What a kill cannot show, a power cut would: each final file appears only by renaming a
    temp file of the same folder that was fsynced first."""
    events: list[tuple[str, str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    loaded = load_model(model_copy)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_model(model_copy, loaded.model, loaded.meta)  # over an existing model
    write_resume_files(model_copy, {"epoch": 1}, {"x": torch.zeros(3)})
    monkeypatch.undo()
    finals = {
        model_copy / WEIGHTS_FILE,
        model_copy / META_FILE,
        model_copy / RESUME_DIR / "state-0001.safetensors",
        model_copy / RESUME_DIR / "state.json",
    }
    for final in finals:
        renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(final)]
        assert len(renames) == 1, final
        src = Path(events[renames[0]][1])
        assert src.parent == final.parent and src.name.startswith(f".{final.name}.")
        assert ("fsync", str(src), "") in events[: renames[0]], f"{final.name} not fsynced"
        assert ("fsync", str(final.parent), "") in events[renames[0] :]  # the rename itself
    assert load_model(model_copy).meta.weights_sha256 == loaded.meta.weights_sha256


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
    (smokerdet_home / "locks").mkdir(exist_ok=True)
    (smokerdet_home / "locks" / "stale.lock").write_text(str(dead.pid))
    cfg = tiny(flat_data, "stale", epochs=1)
    assert train(cfg).name == "stale"


# A training run's hold on a model, in a process of its own: it takes the lock, says so, and
# keeps it until its stdin closes.
HOLD_LOCK = """
import sys
from pathlib import Path
from smokerdet.models.checkpoint import model_lock
with model_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _hold(folder: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_models_remove_refuses_while_another_process_trains_it(runner, model_copy):
    holder = _hold(model_copy)
    try:
        r = runner.invoke(app, ["models", "remove", "tiny"])
        assert r.exit_code == 2, r.output
        assert f"Error: a training run (pid {holder.pid}) is writing model 'tiny'" in r.stderr
        assert "Hint: wait for it to finish or stop it, then remove the model" in r.stderr
        assert (model_copy / META_FILE).is_file()
    finally:
        holder.communicate("")  # the run ends: its lock goes with it
    assert not (model_copy.parents[1] / "locks" / "tiny.pid").exists()
    assert os.listdir(model_copy.parent) == ["tiny"]  # the lock lives elsewhere
    r = runner.invoke(app, ["models", "remove", "tiny"])
    assert r.exit_code == 0, r.output
    assert not model_copy.exists()


def test_a_killed_runs_leftover_process_id_does_not_block_models_remove(runner, model_copy):
    holder = _hold(model_copy)
    holder.kill()  # SIGKILL: its tiny.pid stays behind, its lock does not
    holder.communicate()
    assert (model_copy.parents[1] / "locks" / "tiny.pid").read_text() == f"{holder.pid}\n"
    r = runner.invoke(app, ["models", "remove", "tiny"])
    assert r.exit_code == 0, r.output
    assert not model_copy.exists()


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


if __name__ == "__main__":
    serve()
