#!/usr/bin/env python
"""How does ``smokerdet serve`` hold up under concurrent clients, and would batching help?

1. Batching: the engine scores B photos in one call (B = 1, 4, 8, 16); if the time per photo
   does not drop with B, gathering concurrent requests into one batch cannot make the
   server faster, only add waiting.
2. Load: ``smokerdet serve`` in a subprocess, N requests from C concurrent clients, a mix of
   valid photos (examples/) and broken ones (truncated JPEG, non-image bytes, a
   decompression bomb). Reports statuses (there must be no 5xx), every valid photo labelled,
   p50/p99 latency and throughput.

Example:
    python bench/serve.py --requests 500 --clients 16 --json bench/results/serve.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def batching(model: str, repeats: int) -> list[dict[str, float]]:
    """Median (and spread) of milliseconds per photo when scoring B photos per call."""
    from smokerdet.data.images import load_image
    from smokerdet.inference.backend import open_engine

    engine = open_engine(model)
    photos = [load_image(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    engine.score(photos[:2])  # warm-up
    rows = []
    for batch in (1, 4, 8, 16):
        images = (photos * 2)[:batch]
        per_photo = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.score(images)
            per_photo.append((time.perf_counter() - start) * 1000 / batch)
        rows.append(
            {
                "batch": batch,
                "ms_per_photo_median": statistics.median(per_photo),
                "ms_per_photo_min": min(per_photo),
                "ms_per_photo_max": max(per_photo),
            }
        )
    return rows


def payloads() -> list[tuple[str, bytes, str, bool]]:
    """(kind, body, content type, valid) for every request kind of the mix."""
    good = [(p.name, p.read_bytes(), "image/jpeg", True) for p in sorted(EXAMPLES.glob("*.jpg"))]
    buf = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buf, format="PNG")
    broken = [
        ("truncated", good[0][1][: len(good[0][1]) // 3], "image/jpeg", False),
        ("not-an-image", b"GIF89a but not really" * 10, "image/gif", False),
        ("bomb", buf.getvalue(), "image/png", False),
    ]
    return good + broken


def start_server(model: str, threads: int, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = tmp / "serve.err"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smokerdet", "serve", "--port", "0", "--model", model]
            + ["--threads", str(threads)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    for _ in range(900):
        found = re.search(r"on http://\S+:(\d+)/", log.read_text(errors="replace"))
        if found:
            return proc, f"http://127.0.0.1:{found.group(1)}"
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: {log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("serve did not start")


def load(url: str, requests: int, clients: int, broken_share: float, seed: int) -> dict[str, Any]:
    kinds = payloads()
    good = [k for k in kinds if k[3]]
    bad = [k for k in kinds if not k[3]]
    rng = random.Random(seed)
    plan = [
        rng.choice(bad) if rng.random() < broken_share else rng.choice(good)
        for _ in range(requests)
    ]
    results: list[tuple[float, int, bool, bool]] = []
    lock = threading.Lock()
    todo = iter(plan)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300, trust_env=False) as c:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                _, body, ctype, valid = item
                start = time.perf_counter()
                r = c.post("/v1/predict", content=body, headers={"Content-Type": ctype})
                took = time.perf_counter() - start
                labelled = r.status_code == 200 and r.json()["results"][0]["label"] is not None
                with lock:
                    results.append((took, r.status_code, valid, labelled))

    start = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    latencies = sorted(t * 1000 for t, *_ in results)
    valid_lat = sorted(t * 1000 for t, _, v, _ in results if v)
    statuses: dict[str, int] = {}
    for _, status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    return {
        "requests": len(results),
        "clients": clients,
        "statuses": statuses,
        "5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "valid": sum(1 for *_, v, _ in results if v),
        "valid_labelled": sum(1 for *_, v, lab in results if v and lab),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "valid_p50_ms": pct(valid_lat, 0.5),
        "valid_p99_ms": pct(valid_lat, 0.99),
        "throughput_rps": len(results) / wall,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--broken-share", type=float, default=0.2)
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="serve --threads")
    parser.add_argument("--repeats", type=int, default=5, help="batching: calls per size")
    parser.add_argument("--skip-batching", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    report: dict[str, Any] = {"cpus": os.cpu_count(), "model": args.model}
    if not args.skip_batching:
        report["batching"] = batching(args.model, args.repeats)
        print("batch  ms/photo (median, min-max)")
        for row in report["batching"]:
            print(
                f"{row['batch']:>5}  {row['ms_per_photo_median']:7.1f} "
                f"({row['ms_per_photo_min']:.1f}-{row['ms_per_photo_max']:.1f})"
            )
    report["load"] = []
    for threads in args.threads:
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start_server(args.model, threads, Path(tmp))
            try:
                row = {
                    "threads": threads,
                    **load(url, args.requests, args.clients, args.broken_share, 0),
                }
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        report["load"].append(row)
        print(
            f"threads={threads}: {row['requests']} requests, {row['clients']} clients, "
            f"statuses {row['statuses']}, 5xx {row['5xx']}, "
            f"valid labelled {row['valid_labelled']}/{row['valid']}, "
            f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, "
            f"{row['throughput_rps']:.1f} req/s"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
