#!/usr/bin/env python
"""Is the input pipeline ever the bottleneck of training?

Times one training epoch through smokerdet's real DataLoader (decoded-once images, augmented
in worker processes) against pure forward+backward+step on the same number of batches of
pre-made tensors. The target is a ratio of at most 1.2.

Example:
    python bench/train.py --arch resnet18 --images 256 --json bench/results/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from smokerdet.data.datasets import decode_all
from smokerdet.data.layout import find_dataset
from smokerdet.models.build import create_model, resolve_data_config
from smokerdet.training.data import make_train_loader
from smokerdet.training.loop import Stepper

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/smoker-detection"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=256, help="training images per epoch")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    samples = find_dataset(args.data).train
    samples = (samples[::2] + samples[1::2])[: args.images]
    model = create_model(args.arch)
    cfg = resolve_data_config(model, args.img_size)
    t0 = time.perf_counter()
    items, _ = decode_all(samples, max_side=2 * args.img_size)
    decode_s = time.perf_counter() - t0
    model.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step = Stepper(model, optimizer, "cpu")

    # Pre-made tensors: the same batches, already augmented, so only compute is timed.
    batches = list(make_train_loader(items, cfg, args.batch_size, 0, 0, "cpu"))
    step(*batches[0])  # warm-up (allocator, oneDNN kernels)
    t0 = time.perf_counter()
    for x, y in batches:
        step(x, y)
    compute_s = time.perf_counter() - t0
    n = sum(len(y) for _, y in batches)

    rows = [{"pipeline": "pre-made tensors (compute only)", "seconds": compute_s, "ratio": 1.0}]
    for workers in args.workers:
        loader = make_train_loader(items, cfg, args.batch_size, workers, 0, "cpu")
        it = iter(loader)  # worker start-up belongs to the epoch, as in training
        t0 = time.perf_counter()
        for x, y in it:
            step(x, y)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "pipeline": f"DataLoader, {workers} workers",
                "seconds": seconds,
                "ratio": seconds / compute_s,
            }
        )

    print(
        f"{args.arch} at {args.img_size}px, batch {args.batch_size}, {n} images per epoch, "
        f"torch threads {torch.get_num_threads()}, decode-once {decode_s:.2f}s"
    )
    print(f"{'pipeline':<34} {'epoch s':>8} {'img/s':>7} {'x compute':>9}")
    for r in rows:
        print(
            f"{r['pipeline']:<34} {r['seconds']:>8.2f} {n / r['seconds']:>7.1f} {r['ratio']:>9.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": date.today().isoformat(),
                    "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    "torch": torch.__version__,
                    "arch": args.arch,
                    "img_size": args.img_size,
                    "batch_size": args.batch_size,
                    "images": n,
                    "decode_once_s": decode_s,
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
