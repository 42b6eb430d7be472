#!/usr/bin/env python
"""Soak: ``smokerdet predict --json`` over many paths, 1% of them corrupt.

Records throughput over time (it must stay flat), the peak RSS of the process and its
workers (flat, under 1.5 GB), and checks the output: exactly one line per path, and exactly
the corrupt files marked as errors.

Example:
    python bench/soak.py --paths 100000 --model my-model --json bench/results/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import DEFAULT_DATA, tree_rss_mb  # noqa: E402

from smokerdet.data.layout import find_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=100_000)
    parser.add_argument("--corrupt", type=float, default=0.01)
    parser.add_argument("--model", default=None)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per throughput row")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    photos = [s.path.resolve() for s in find_dataset(args.data).get("all")]
    rng = random.Random(0)
    corrupt: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for i in range(args.paths):
            if rng.random() < args.corrupt:
                p = folder / f"{i:06d}_corrupt.jpg"
                p.write_bytes(os.urandom(rng.randint(0, 3000)))
                corrupt.add(str(p))
            else:
                p = folder / f"{i:06d}.jpg"
                p.symlink_to(photos[i % len(photos)])
            paths.append(str(p))

        cmd = [sys.executable, "-m", "smokerdet", "predict", "-", "--json"]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert proc.stdin and proc.stdout

        def feed() -> None:
            for p in paths:
                proc.stdin.write(p + "\n")
            proc.stdin.close()

        threading.Thread(target=feed, daemon=True).start()
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter() - t0, tree_rss_mb(proc.pid)))
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        lines, errors, bad_json = 0, set(), 0
        marks: list[tuple[float, int]] = []
        next_mark = args.window
        for line in proc.stdout:
            lines += 1
            try:
                row = json.loads(line)
            except ValueError:
                bad_json += 1
                continue
            if row["error"] is not None:
                errors.add(row["path"])
            now = time.perf_counter() - t0
            if now >= next_mark:
                marks.append((now, lines))
                next_mark += args.window
        rc = proc.wait()
        total_s = time.perf_counter() - t0
        stop.set()
    marks.append((total_s, lines))

    rows = []
    prev_t, prev_n = 0.0, 0
    for t, n in marks:
        rss = max((r for s, r in samples if prev_t <= s <= t), default=0.0)
        rows.append({"until_s": t, "images_per_s": (n - prev_n) / (t - prev_t), "peak_rss_mb": rss})
        prev_t, prev_n = t, n
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "paths": args.paths,
        "corrupt": len(corrupt),
        "exit_code": rc,
        "lines": lines,
        "bad_json_lines": bad_json,
        "errors_exactly_the_corrupt_files": errors == corrupt,
        "seconds": total_s,
        "images_per_s": lines / total_s,
        "peak_rss_mb": max(r for _, r in samples),
        "windows": rows,
    }
    print(f"{args.paths} paths ({len(corrupt)} corrupt): {lines} lines, exit {rc}, "
          f"errors == corrupt: {errors == corrupt}, {total_s:.0f}s, {lines / total_s:.1f} img/s, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB")  # fmt: skip
    print(f"{'until s':>8} {'img/s':>8} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['until_s']:>8.0f} {r['images_per_s']:>8.1f} {r['peak_rss_mb']:>12.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
