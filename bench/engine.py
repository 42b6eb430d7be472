#!/usr/bin/env python
"""ONNX Runtime against torch for ``smokerdet predict``, side by side in one run.

Measures, with the shipped model (or ``--model``):

1. cold ``smokerdet predict one.jpg --json`` (the whole process) through ONNX and through
   torch (the same model folder without its ``model.onnx``, so ``auto`` falls back): wall
   time and peak RSS;
2. ``smokerdet predict`` on N photos end to end, start-up included, both backends;
3. the onnxruntime forward-only ceiling, TTA included (photos/s): one session with one
   intra-op thread per core at batch 1, 2 and 8, and one single-threaded session per core
   in separate processes;
4. the end-to-end layout sweep through the library: batch size x worker processes;
5. the ``--heatmaps`` overhead per photo.

Every figure is the median of ``--repeats`` runs with its spread (min-max).

Example:
    python bench/engine.py --images 1000 --repeats 3 --json bench/results/engine.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared/data/smoker-detection"


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def photos(data: Path, n: int) -> list[Path]:
    found = sorted(p for p in data.rglob("*.jpg"))
    if not found:
        sys.exit(f"no photos under {data}: pass --data")
    return [found[i % len(found)] for i in range(n)]  # repeats files when N > the dataset


def run_cli(args: list[str], stdin: str | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB of the largest process) of one ``python -m smokerdet`` run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "smokerdet", *args]
    started = time.perf_counter()
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return seconds, int(out.stderr.strip().splitlines()[-1]) / 1024


def torch_only_copy(folder: Path, tmp: Path) -> Path:
    copy = tmp / "torch-only"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("model.onnx"))
    return copy


def _forward_worker(args: tuple[str, int, int, float]) -> int:
    from smokerdet.inference.backend import open_engine

    model, batch, size, seconds = args
    engine = open_engine(model, backend="onnx", threads=1)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    engine.score_arrays(x)
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        engine.score_arrays(x)
        done += batch
    return done


def forward_ceiling(model: str, seconds: float) -> dict[str, Any]:
    """Photos/s through onnxruntime alone (TTA included), per layout."""
    from smokerdet.inference.backend import open_engine

    cores = os.cpu_count() or 1
    engine = open_engine(model, backend="onnx")
    size = engine.meta.data_config.input_size
    out: dict[str, Any] = {}
    for batch in (1, 2, 8):
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        engine.score_arrays(x)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            engine.score_arrays(x)
            done += batch
        out[f"1 session x {cores} threads, batch {batch}"] = done / (time.perf_counter() - started)
    for batch in (1,):
        with mp.get_context("spawn").Pool(cores) as pool:
            started = time.perf_counter()
            done = sum(pool.map(_forward_worker, [(model, batch, size, seconds)] * cores))
            # the workers' own timers exclude start-up; divide by their shared window
        out[f"{cores} processes x 1 thread, batch {batch}"] = done / seconds
    return out


def end_to_end_sweep(model: str, paths: list[Path]) -> dict[str, float]:
    """Photos/s of the library's predict in this process, engine already open."""
    import smokerdet

    out: dict[str, float] = {}
    for batch, workers in ((1, 0), (1, 2), (4, 2), (8, 2), (1, 4)):
        started = time.perf_counter()
        n = sum(
            1
            for _ in smokerdet.predict(
                paths, model=model, backend="onnx", batch_size=batch, workers=workers
            )
        )
        out[f"batch {batch}, {workers} worker processes"] = n / (time.perf_counter() - started)
    return out


def heatmap_overhead(model: str, paths: list[Path]) -> dict[str, float]:
    import smokerdet

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, heat in (("without", None), ("with", tmp)):
            started = time.perf_counter()
            list(smokerdet.predict(paths, model=model, backend="onnx", heatmaps=heat))
            timings[label] = (time.perf_counter() - started) / len(paths) * 1000
    timings["overhead_ms_per_photo"] = timings["with"] - timings["without"]
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per forward-only layout")
    parser.add_argument("--skip-torch-e2e", action="store_true", help="the slow torch run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from smokerdet.models.registry import resolve_model

    _, folder = resolve_model(args.model)
    paths = photos(args.data, args.images)
    one = str(paths[0])
    listing = "\n".join(str(p) for p in paths) + "\n"
    result: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "model": str(folder),
        "images": args.images,
    }
    with tempfile.TemporaryDirectory() as tmp:
        torch_folder = torch_only_copy(folder, Path(tmp))
        for name, model in (("onnx", str(folder)), ("torch", str(torch_folder))):
            runs = [
                run_cli(["predict", one, "--json", "--model", model]) for _ in range(args.repeats)
            ]
            result[f"cold_one_{name}_s"] = spread([s for s, _ in runs])
            result[f"cold_one_{name}_rss_mb"] = spread([m for _, m in runs])
            if name == "torch" and args.skip_torch_e2e:
                continue
            seconds, rss = run_cli(["predict", "-", "--json", "--model", model], stdin=listing)
            result[f"e2e_{name}_photos_per_s"] = args.images / seconds
            result[f"e2e_{name}_rss_mb"] = rss
            print(json.dumps({k: v for k, v in result.items() if name in k}), file=sys.stderr)
    result["forward_ceiling_photos_per_s"] = forward_ceiling(str(folder), args.seconds)
    result["sweep_photos_per_s"] = end_to_end_sweep(str(folder), paths[: min(200, len(paths))])
    result["heatmaps_ms"] = heatmap_overhead(str(folder), paths[:100])
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
