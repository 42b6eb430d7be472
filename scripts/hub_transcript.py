"""Run ``smokerdet train --arch resnet50 --epochs 1`` twice against a local fake Hugging Face Hub.

The first run downloads the (randomly initialised) resnet50 weights through the Hub client
with a progress bar on stderr; the second finds them in the cache and sends no request. Each
run's stderr and the Hub's request log are printed, so the transcript shows both.

    python scripts/hub_transcript.py            # about a minute on two CPU cores

Nothing outside a temp dir is touched: ``SMOKERDET_HOME`` and ``HF_ENDPOINT`` point into it.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO_PATH = "/timm/resnet50.a1_in1k/resolve/main/model.safetensors"


def serve(body: bytes, log: list[str]) -> ThreadingHTTPServer:
    """HEAD/GET of resnet50's model.safetensors, with the Hub's X-Repo-Commit and ETag."""
    etag = hashlib.sha256(body).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _head(self) -> bool:
            log.append(f"{self.command} {self.path}")
            if self.path != REPO_PATH:
                self.send_response(404)
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("ETag", f'"{etag}"')
            self.end_headers()
            return True

        def do_HEAD(self) -> None:  # noqa: N802
            self._head()

        def do_GET(self) -> None:  # noqa: N802
            if self._head():
                self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def tiny_dataset(folder: Path, n: int = 8) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = random.Random(0)
    for label, prefix in ((1, "smoking"), (0, "notsmoking")):
        base = (200, 60, 40) if label else (40, 80, 200)
        for i in range(n):
            colour = tuple(c + rng.randint(-30, 30) for c in base)
            Image.new("RGB", (64, 64), colour).save(folder / f"{prefix}_{i:04d}.jpg")
    return folder


def main() -> None:
    import timm
    from safetensors.torch import save

    root = Path(tempfile.mkdtemp(prefix="smokerdet-hub-"))
    sd = timm.create_model("resnet50").state_dict()
    body = save({k: v.contiguous() for k, v in sd.items()})
    log: list[str] = []
    httpd = serve(body, log)
    env = {
        **os.environ,
        "SMOKERDET_HOME": str(root / "home"),
        "HF_ENDPOINT": f"http://127.0.0.1:{httpd.server_address[1]}",
    }
    env.pop("HF_HUB_OFFLINE", None)
    data = tiny_dataset(root / "data")
    for run in (1, 2):
        cmd = [
            sys.executable, "-m", "smokerdet", "train", "--arch", "resnet50", "--epochs", "1",
            "--data", str(data), "--img-size", "64", "--batch-size", "8", "--workers", "0",
            "--name", f"run{run}",
        ]  # fmt: skip
        print(f"$ HF_ENDPOINT={env['HF_ENDPOINT']} smokerdet {' '.join(cmd[3:])}")
        before = len(log)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        # tqdm redraws with \r when stderr is not a terminal: show each redraw on its own line.
        print(done.stderr.replace("\r", "\n").strip())
        print(done.stdout.strip())
        print(f"[exit {done.returncode}; requests to the Hub: {log[before:] or 'none'}]\n")
    httpd.shutdown()


if __name__ == "__main__":
    main()
