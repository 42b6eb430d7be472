#!/usr/bin/env python
"""Scaling out on one machine: 1 vs 2 processes under torchrun, for predict and for training.

Three measurements, each a real command run a few times (median and spread):

- predict: images per second of ``smokerdet predict DIR --json`` with one process and with
  ``torchrun --nproc_per_node 2`` (the ranks share the cores: one engine thread each). Start-up is
  taken out by timing a small run too: throughput = (N - n) / (t_N - t_n).
- gather: what collecting rows on rank 0 in input order costs, per row, with 2 gloo processes.
- train: the time of one optimisation step of ``smokerdet train`` with 1 and 2 gloo
  processes at the same per-process batch (so 2 processes see twice the images per step).

Example:
    python bench/scale.py --data DIR --images 256 --repeats 3 --json bench/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared/data/smoker-detection"


def smokerdet(args: list[str], nproc: int | None, env: dict[str, str]) -> float:
    """Wall seconds of one ``smokerdet ARGS`` (under torchrun with ``nproc`` processes)."""
    if nproc is None:
        cmd = [sys.executable, "-m", "smokerdet", *args]
    else:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, "--nproc_per_node", str(nproc), "-m", "smokerdet", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return seconds


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def link_images(data: Path, n: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in data.rglob("*.jpg"))[:n]
    for i, f in enumerate(files):
        (folder / f"{i:05d}_{f.name}").symlink_to(f.resolve())
    return folder


def bench_predict(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict:
    big = link_images(args.data, args.images, tmp / "big")
    small = link_images(args.data, 16, tmp / "small")
    out: dict[str, dict[str, float]] = {}
    for label, nproc in (("1 process", None), ("2 processes (torchrun)", 2)):
        rates = []
        for _ in range(args.repeats):
            cmd = ["predict", "--json", "--model", args.model]
            t_big = smokerdet([*cmd, str(big)], nproc, env)
            t_small = smokerdet([*cmd, str(small)], nproc, env)
            rates.append((args.images - 16) / max(1e-9, t_big - t_small))
        out[label] = stats(rates)
    return out


def gather_worker(rows: int, block: int) -> None:
    """Runs under torchrun: time gathering ``rows`` prediction rows to rank 0 in rounds."""
    from smokerdet import distributed

    with distributed.session("cpu") as world:
        row = {"path": "photos/2026/05/01/cam-17/000123.jpg", "label": "smoking"}
        row |= {"probability": 0.8731, "threshold": 0.5, "model": "default", "error": None}
        rounds = rows // (block * world.size)
        distributed.barrier()
        t0 = time.perf_counter()
        for _ in range(rounds):
            got = distributed.gather_to_main([row] * block)
            if got is not None:
                [r for part in got for r in part]  # the ordering work rank 0 does
        seconds = time.perf_counter() - t0
        if world.is_main:
            print(json.dumps({"us_per_row": 1e6 * seconds / (rounds * block * world.size)}))


def bench_gather(args: argparse.Namespace, env: dict[str, str]) -> dict:
    values = []
    for _ in range(args.repeats):
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, "--nproc_per_node", "2", __file__, "--inner-gather", "20000"]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        values.append(json.loads(r.stdout.strip().splitlines()[-1])["us_per_row"])
    return {"microseconds per row (block 64, 2 ranks)": stats(values)}


def bench_train(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict:
    out = {}
    for nproc in (1, 2):
        steps = []
        for i in range(args.repeats):
            home = tmp / f"train-{nproc}-{i}"
            cmd = ["train", "--arch", "resnet10t", "--no-pretrained", "--img-size", "64"]
            cmd += ["--epochs", "1", "--batch-size", "16", "--workers", "0", "--json"]
            cmd += ["--data", str(args.data), "--name", "bench"]
            e = {**env, "SMOKERDET_HOME": str(home)}
            run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            full = [*run, "--nproc_per_node", str(nproc), "-m", "smokerdet", *cmd]
            r = subprocess.run(full, env=e, capture_output=True, text=True, check=True)
            result = json.loads(r.stdout)
            h = result["history"][0]
            n = sum(result["counts"]["train"].values())
            share = -(-n // nproc)  # DistributedSampler pads every rank to the same share
            steps_per_epoch = share // 16 if share > 16 else 1  # full batches only
            seen = steps_per_epoch * 16 * nproc if share > 16 else n
            train_s = seen / h["images_per_second"]  # the training pass, without validation
            steps.append(train_s / steps_per_epoch)
        out[f"{nproc} process{'es' if nproc > 1 else ''}"] = stats(steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["predict", "gather", "train"], action="append")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--inner-gather", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner_gather:
        return gather_worker(args.inner_gather, 64)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["OMP_NUM_THREADS"] = "1"
    results: dict = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared",
        "images": args.images,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        env["SMOKERDET_HOME"] = str(tmp / "home")
        todo = args.only or ["predict", "gather", "train"]
        if "predict" in todo:
            results["predict images/s"] = bench_predict(args, env, tmp)
        if "gather" in todo:
            results["gather"] = bench_gather(args, env)
        if "train" in todo:
            results["train seconds/step (batch 16 per process)"] = bench_train(args, env, tmp)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
