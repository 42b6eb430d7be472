#!/usr/bin/env python
"""Peak memory of ``smokerdet predict`` on many photos: the process and its workers (PSS).

Each path is a distinct symlink to a dataset photo (repeated as needed), fed on stdin, with
JSON Lines on stdout, as a pipeline over a camera archive would run it. PSS is sampled every
half second from ``/proc/PID/smaps_rollup`` of the whole process tree (Linux only).

Example:
    python bench/memory.py --data DIR --images 10000
    python bench/memory.py --data DIR --images 10000 --backend torch
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import DEFAULT_DATA, images_list, run_cli  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = images_list(args.data, args.images, Path(tmp))
        listing = "".join(f"{p}\n" for p in paths)
        cli = ["predict", "-", "--json", "--model", args.model, "--backend", args.backend]
        seconds, peak, rows, code = run_cli(cli, listing, interval=0.5)
    print(
        f"{date.today()}: {args.images} photos, --backend {args.backend}: {seconds:.1f} s "
        f"({args.images / seconds:.1f} photos/s), peak PSS {peak:.0f} MB (process + workers), "
        f"{rows} rows, exit code {code}"
    )


if __name__ == "__main__":
    main()
