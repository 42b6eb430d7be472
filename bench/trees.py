#!/usr/bin/env python
"""Two checkouts of smokerdet side by side: the same ``predict`` runs, interleaved, one machine.

For a change that should not cost speed (a reshape, a refactor), run each source tree's own
``smokerdet`` CLI (``PYTHONPATH`` points at the tree) on the same photos, alternating the trees
run by run so that a busy moment hurts both alike, and report each cell's median with its
min-max spread:

1. cold ``smokerdet predict one.jpg --json`` (the whole process);
2. ``smokerdet predict`` on N photos end to end through ONNX Runtime (start-up included);
3. the same through torch (``--backend torch``), on fewer photos (it is slower).

Example:
    git worktree add /tmp/before f5baaca
    python bench/trees.py --before /tmp/before --after . --images 1000 --repeats 3
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


def photos(data: Path, n: int) -> list[Path]:
    found = sorted(data.rglob("*.jpg"))
    if not found:
        sys.exit(f"no photos under {data}")
    return [found[i % len(found)] for i in range(n)]


def run_cli(tree: Path, args: list[str], stdin: str | None, home: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), SMOKERDET_HOME=str(home))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "smokerdet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{tree}: smokerdet {' '.join(args[:3])} failed:\n{done.stderr[-2000:]}")
    return elapsed


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the old source tree")
    parser.add_argument("--after", type=Path, default=ROOT, help="the new source tree")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--torch-images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: a median of fewer runs has no spread")
    many = "\n".join(str(p) for p in photos(args.data, args.images)) + "\n"
    few = "\n".join(str(p) for p in photos(args.data, args.torch_images)) + "\n"
    one = str(photos(args.data, 1)[0])
    cells = {
        "cold predict one.jpg (s)": (["predict", one, "--json"], None),
        f"predict {args.images} photos, ONNX, end to end (s)": (["predict", "-", "--json"], many),
        f"predict {args.torch_images} photos, torch, end to end (s)": (
            ["predict", "-", "--json", "--backend", "torch"],
            few,
        ),
    }
    trees = {"before": args.before, "after": args.after}
    times: dict[str, dict[str, list[float]]] = {c: {t: [] for t in trees} for c in cells}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        for name, (cli, stdin) in cells.items():
            for tree in trees.values():  # warm the page cache and the bytecode once
                run_cli(tree, cli if stdin is None else ["predict", one, "--json"], None, home)
            for _ in range(args.repeats):
                for label, tree in trees.items():
                    times[name][label].append(run_cli(tree, cli, stdin, home))
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cells": {c: {t: spread(v) for t, v in by.items()} for c, by in times.items()},
    }
    print("| cell | before (median, min-max) | after (median, min-max) | after / before |")
    print("|---|---|---|---|")
    for cell, by in result["cells"].items():
        b, a = by["before"], by["after"]
        print(
            f"| {cell} | {b['median']:.2f} ({b['min']:.2f}-{b['max']:.2f}) "
            f"| {a['median']:.2f} ({a['min']:.2f}-{a['max']:.2f}) | {a['median'] / b['median']:.2f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
