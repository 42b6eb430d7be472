#!/usr/bin/env python
"""Fit a model's familiarity stats: its training split described, its validation split
calibrating the cut, written as ``familiarity.safetensors`` beside its weights.

Models trained by ``smokerdet train`` get theirs when they are saved; this script adds them
to an older model, or rebuilds the shipped model's.

Example:
    python scripts/fit_familiarity.py --model default --data ../shared/data/smoker-detection
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from smokerdet.data.layout import find_dataset
from smokerdet.inference.familiarity import DEFAULT_DIMS, Familiarity, fit_for_model
from smokerdet.models.registry import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model name, folder or 'default'")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (train + val)")
    parser.add_argument("--dims", type=int, default=DEFAULT_DIMS, help="principal directions")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    args = parser.parse_args()
    name, folder = resolve_model(args.model)
    ds = find_dataset(args.data)
    train = [s.path for s in ds.get("train")]
    val = [s.path for s in ds.get("val")]
    start = time.perf_counter()
    path = fit_for_model(folder, train, val, dims=args.dims, backend=args.backend)
    if path is None:
        sys.exit(f"{name}: too few readable training photos in {args.data}")
    stats = Familiarity.from_bytes(path.read_bytes())
    print(
        f"{path}: {stats.n_train} training photos, {stats.components.shape[1]} directions, "
        f"cut {stats.cut:.4f} from {stats.n_val} validation photos, "
        f"{path.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
