"""A real Ctrl-C, mid-run: exit 130, ``Error:`` + a true ``Hint:``, no traceback, work kept.

Each command runs as ``python -m smokerdet`` in its own process group, and SIGINT goes to
the whole group, as a terminal's Ctrl-C does (DataLoader workers included). The signal is
sent once the command has reached a phase it shows (rows printed, an epoch finished, workers
started), never after a guessed sleep.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, synthetic_image, write_flat

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="POSIX signals and /proc"
)

ROOT = Path(__file__).resolve().parents[2]
LEAKS = ("Traceback", "Exception ignored", "KeyboardInterrupt")


class Run:
    """A command in its own process group, its stdout and stderr collected line by line by
    threads, so waiting for a phase or for the end has a deadline and never deadlocks."""

    def __init__(self, args: list[str], home: Path) -> None:
        env = {
            **os.environ,
            "SMOKERDET_HOME": str(home),
            "PYTHONUNBUFFERED": "1",  # rows reach the pipe as they are printed
            "PYTHONPATH": str(ROOT),
        }
        env.pop("SMOKERDET_DEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smokerdet", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group, like a shell job
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _collect(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for(self, reached, limit_s: float = 180) -> None:
        """Return once ``reached()`` is true; fail if the command ends or time runs out first."""
        deadline = time.monotonic() + limit_s
        while not reached():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"phase not reached:\n{''.join(self.out)}\n{''.join(self.err)}")
            time.sleep(0.02)

    def ctrl_c(self, limit_s: float = 120) -> tuple[str, str]:
        """SIGINT to the whole group, as a terminal sends it; then stdout and stderr."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"still running {limit_s}s after Ctrl-C:\n{''.join(self.err)}")
        for reader in self.readers:
            reader.join(timeout=10)
        return "".join(self.out), "".join(self.err)


def _assert_clean(err: str) -> None:
    for leak in LEAKS:
        assert leak not in err, err


@pytest.fixture
def many_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(300):
        synthetic_image(i % 2, i, size=48).save(folder / f"photo_{i:04d}.jpg")
    return folder


def test_predict_table_keeps_the_rows_it_printed(tmp_path, many_photos):
    # The shipped model at 256 px, with 2 worker processes: slow enough to stop mid-run.
    run = Run(["predict", str(many_photos), "--workers", "2"], tmp_path / "home")
    run.wait_for(lambda: len(run.out) >= 6)  # the header and 5 rows
    out, err = run.ctrl_c()
    assert run.proc.returncode == 130, err
    _assert_clean(err)
    rows = [line for line in out.splitlines(keepends=True)[1:] if line.strip()]
    done = int(re.search(r"predict interrupted after (\d+) of 300 images", err).group(1))
    assert 5 <= done < 300 and len(rows) == done
    for i, row in enumerate(rows):  # every row printed is whole, in input order
        assert re.fullmatch(
            rf"{re.escape(str(many_photos / f'photo_{i:04d}.jpg'))} +\d\.\d{{3}}  "
            r"(smoking|not_smoking)(  \(unfamiliar\))?\n",
            row,
        ), row
    assert f"model default: {done} of 300 images" in err
    assert (
        f"Hint: the rows printed are complete for the first {done} images; "
        "run the same command again to label all 300; a run that can pick up where it "
        "stopped: add --output FILE, then --resume"
    ) in err


def test_only_a_large_predict_run_is_pointed_at_a_resumable_one():
    from smokerdet.cli._output import LARGE_RUN, PredictSummary, _interrupted

    small = _interrupted(PredictSummary(total=LARGE_RUN - 1, done=3), None)
    assert small.hint.endswith(f"run the same command again to label all {LARGE_RUN - 1}")
    large = _interrupted(PredictSummary(total=LARGE_RUN, done=3), None)
    assert "--output FILE, then --resume" in large.hint


def test_predict_csv_file_keeps_its_rows(tmp_path, many_photos):
    csv_file = tmp_path / "out.csv"
    args = ["predict", str(many_photos), "--workers", "2", "--json", "--csv", str(csv_file)]
    run = Run(args, tmp_path / "home")
    run.wait_for(lambda: len(run.out) >= 5)
    out, err = run.ctrl_c()
    assert run.proc.returncode == 130, err
    _assert_clean(err)
    done = int(re.search(r"after (\d+) of 300 images", err).group(1))
    assert len(csv_file.read_text().splitlines()) == done + 1  # and the header
    assert f"in {csv_file} are complete for the first {done} images" in err


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # it has ended: wait_for says so
        return []


def test_eval_interrupted_while_scoring(tmp_path):
    data = write_flat(tmp_path / "data", n_per_class=150, size=48)
    run = Run(["eval", "--data", str(data), "--split", "all", "--workers", "2"], tmp_path / "h")
    run.wait_for(lambda: len(_children(run.proc.pid)) >= 2)  # scoring started: workers are up
    out, err = run.ctrl_c()
    assert run.proc.returncode == 130, err
    _assert_clean(err)
    assert out == ""  # no half report
    assert "Error: eval interrupted" in err
    assert "Hint: eval changes nothing" in err


def test_train_interrupted_after_an_epoch_keeps_it(tmp_path):
    data = write_flat(tmp_path / "data", n_per_class=40)
    args = [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "stopped", "--workers", "1"]
    args[args.index("--epochs") + 1] = "200"
    run = Run([*args, "--patience", "0"], tmp_path / "home")
    run.wait_for(lambda: any(re.match(r"\s+1\s+\d", line) for line in run.err))  # epoch 1
    out, err = run.ctrl_c()
    assert run.proc.returncode == 130, err
    _assert_clean(err)
    assert re.search(r"Error: training of stopped interrupted during epoch \d+; epochs 1-", err)
    assert "Hint: resume with: smokerdet train --resume stopped" in err
    assert (tmp_path / "home" / "models" / "stopped" / "resume").is_dir()
