"""How often a 2-rank DDP run aborts at exit after succeeding, with and without the hard exit.

With the torch this project pins, DistributedDataParallel keeps references to the gloo process
group that ``destroy_process_group`` cannot drop, so gloo's threads outlive the group. When the
interpreter then shuts down they abort the process now and then (SIGABRT, "terminate called
without an active exception"), and torchrun stops the other rank: a run that trained and saved
its model exits non-zero. ``smokerdet``'s console entry point therefore ends a process that
joined a process group with :func:`smokerdet.distributed.hard_exit`.

This script launches the same tiny DDP worker under ``torchrun`` ``--runs`` times for each
ending, interleaved, optionally beside busy-loop processes that load the CPU (the aborts are
timing-dependent and show up more on a busy machine, as in CI), and counts the failures.

Usage:
    python bench/ddp_exit.py --runs 40 --load 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENDINGS = ("interpreter", "hard_exit")


def worker(ending: str) -> None:
    """One rank: join the group, take a few DDP steps, leave, and end as ``ending`` says."""
    import torch

    from smokerdet import distributed

    with distributed.session("cpu"):
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
        for _ in range(3):
            model(torch.randn(4, 8)).sum().backward()
        distributed.all_gather(distributed.current().rank)
    if ending == "hard_exit":
        distributed.hard_exit(0)
    sys.exit(0)


def launch(ending: str) -> tuple[int, bool]:
    """One torchrun launch of two ranks; returns (exit code, whether a rank aborted)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", __file__, "--worker", ending]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, "SIGABRT" in r.stderr or "terminate called" in r.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="launches per ending")
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes beside them")
    parser.add_argument("--worker", choices=ENDINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    failed = {e: 0 for e in ENDINGS}
    aborted = {e: 0 for e in ENDINGS}
    started = time.perf_counter()
    try:
        for i in range(args.runs):
            for ending in ENDINGS:
                code, abort = launch(ending)
                failed[ending] += code != 0
                aborted[ending] += abort
            print(f"\r{i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
    finally:
        for hog in hogs:
            hog.kill()
    print(file=sys.stderr)
    print(f"{args.runs} launches of 2 ranks per ending, {args.load} busy processes beside them, "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    print("| ending | failed launches | of which a rank aborted |")
    print("|---|---|---|")
    for ending in ENDINGS:
        print(f"| {ending} | {failed[ending]}/{args.runs} | {aborted[ending]} |")


if __name__ == "__main__":
    main()
