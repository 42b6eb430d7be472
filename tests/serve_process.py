"""`smokerdet serve` as a real process on a free port, for the serve, page and share tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"


class Server:
    """``python -m smokerdet serve`` on a free port, its stderr in a file."""

    def __init__(
        self, tmp: Path, *args: str, runner: tuple[str, ...] = ("-m", "smokerdet")
    ) -> None:
        self.log = tmp / "serve.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        env.pop("SMOKERDET_TOKEN", None)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *runner, "serve", "--port", "0", *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            found = re.search(r"on http://\S+:(\d+)/", text)
            if found:
                return f"http://127.0.0.1:{found.group(1)}"
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {text}")
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError("serve did not start in time")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: a proxy from the environment must not see 127.0.0.1 traffic.
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, trust_env=False)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")
