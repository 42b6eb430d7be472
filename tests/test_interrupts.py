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
import time
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_ARGS, synthetic_image, write_flat

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="POSIX signals and /proc"
)

ROOT = Path(__file__).resolve().parent.parent
LEAKS = ("Traceback", "Exception ignored", "KeyboardInterrupt")


def _start(args: list[str], home: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "SMOKERDET_HOME": str(home),
        "PYTHONUNBUFFERED": "1",  # rows reach the pipe as they are printed
        "PYTHONPATH": str(ROOT),
    }
    env.pop("SMOKERDET_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "smokerdet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, like a shell job
    )


def _read_until(stream, done, limit_s: float = 120) -> list[str]:
    """Lines of ``stream`` up to the first for which ``done(lines)`` is true."""
    lines: list[str] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if done(lines):
            return lines
    pytest.fail(f"the phase was never reached; got {''.join(lines)!r}")


def _ctrl_c(proc: subprocess.Popen) -> tuple[str, str]:
    os.killpg(proc.pid, signal.SIGINT)
    # Read through the same buffered streams as _read_until (communicate() would skip what
    # they already hold). stderr is a few lines: it cannot fill its pipe meanwhile.
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=120)
    return out, err


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
    proc = _start(["predict", str(many_photos), "--workers", "2"], tmp_path / "home")
    head = _read_until(proc.stdout, lambda lines: len(lines) >= 6)  # the header and 5 rows
    out, err = _ctrl_c(proc)
    assert proc.returncode == 130, err
    _assert_clean(err)
    rows = [line for line in (head + out.splitlines(keepends=True))[1:] if line.strip()]
    done = int(re.search(r"predict interrupted after (\d+) of 300 images", err).group(1))
    assert 5 <= done < 300 and len(rows) == done
    for i, row in enumerate(rows):  # every row printed is whole, in input order
        assert re.fullmatch(
            rf"{re.escape(str(many_photos / f'photo_{i:04d}.jpg'))} +\d\.\d{{3}}  "
            r"(smoking|not_smoking)\n",
            row,
        ), row
    assert f"model default: {done} of 300 images" in err
    assert (
        f"Hint: the rows printed are complete for the first {done} images; "
        "run the same command again to label all 300"
    ) in err


def test_predict_csv_file_keeps_its_rows(tmp_path, many_photos):
    csv_file = tmp_path / "out.csv"
    args = ["predict", str(many_photos), "--workers", "2", "--json", "--csv", str(csv_file)]
    proc = _start(args, tmp_path / "home")
    _read_until(proc.stdout, lambda lines: len(lines) >= 5)
    out, err = _ctrl_c(proc)
    assert proc.returncode == 130, err
    _assert_clean(err)
    done = int(re.search(r"after (\d+) of 300 images", err).group(1))
    assert len(csv_file.read_text().splitlines()) == done + 1  # and the header
    assert f"in {csv_file} are complete for the first {done} images" in err


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_eval_interrupted_while_scoring(tmp_path):
    data = write_flat(tmp_path / "data", n_per_class=150, size=48)
    proc = _start(["eval", "--data", str(data), "--split", "all", "--workers", "2"], tmp_path / "h")
    deadline = time.monotonic() + 120
    while len(_children(proc.pid)) < 2:  # scoring has started: its workers are up
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    out, err = _ctrl_c(proc)
    assert proc.returncode == 130, err
    _assert_clean(err)
    assert out == ""  # no half report
    assert "Error: eval interrupted" in err
    assert "Hint: eval changes nothing" in err


def test_train_interrupted_after_an_epoch_keeps_it(tmp_path):
    data = write_flat(tmp_path / "data", n_per_class=40)
    args = [*TINY_TRAIN_ARGS, "--data", str(data), "--name", "stopped", "--workers", "1"]
    args[args.index("--epochs") + 1] = "200"
    proc = _start([*args, "--patience", "0"], tmp_path / "home")
    _read_until(proc.stderr, lambda lines: re.match(r"\s+1\s+\d", lines[-1]) is not None)
    out, err = _ctrl_c(proc)
    assert proc.returncode == 130, err
    _assert_clean(err)
    assert re.search(r"Error: training of stopped interrupted during epoch \d+; epochs 1-", err)
    assert "Hint: resume with: smokerdet train --resume stopped" in err
    assert (tmp_path / "home" / "models" / "stopped" / "resume").is_dir()
