#!/usr/bin/env python
"""How fast is ``smokerdet predict --backend torch`` against what the hardware allows?

The torch path (GPUs, models without an ONNX file); ``bench/engine.py`` measures the default
ONNX Runtime path the same way.

Measures, for one model (architecture and input size as stored in it), every cell repeated
(``--repeats``, at least 3) and reported as its median with the min-max spread:

1. ``smokerdet predict --json`` end to end on N images (a subprocess: start-up included);
   with ``--memory-images M``, a second run on M images gives the peak memory (PSS of the
   process and its workers);
2. a naive loop: PIL open, the model's transform, one forward per image, after a warm-up and
   in the memory layout smokerdet uses on a CPU (channels_last);
3. ``smokerdet.predict()`` in-process (model loaded, decoding included), and with ``--sweep``
   at batch 1-8 and 0 or one worker per core;
4. the forward pass alone: on the same images' tensors, and on random input in both memory
   layouts at batch 1, 8 and 32 (optionally bf16 and torch.compile): every one of these counts
   toward the one-process ceiling, which is the best of them;
5. the forward pass in one forked process per core, one thread each (how smokerdet scores on a
   CPU), batch 1, 4 and 8: the multi-process ceiling, the best of those;
6. the physical limit: the model's FLOPs over the machine's measured fp32 matmul FLOP/s (a
   bound, not a measurement of the model).

The headline is end to end (1) over the best ceiling: the highest rate any measured
configuration reached. A pipeline row above a forward-only ceiling is flagged, since a
ceiling a full pipeline beats is no ceiling. ``--quick`` runs every cell on few images and
short windows, to check that the script works, not to measure. Prints a table; ``--json FILE``
also writes the numbers.

Example:
    python bench/predict.py --images 1000 --json bench/results/predict.json
    python bench/predict.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from tensors import eval_transform

from smokerdet.data.images import load_image
from smokerdet.data.layout import find_dataset
from smokerdet.models.registry import load_model

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/smoker-detection"


def tree_rss_mb(pid: int) -> float:
    """Memory of a process and all its descendants, in MB (Linux /proc).

    Sums PSS (proportional set size), so the pages that forked DataLoader workers share with
    their parent are counted once, not once per process as a plain RSS sum would.
    """
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def run_cli(
    args: list[str], stdin: str, interval: float | None = None
) -> tuple[float, float | None, int, int]:
    """Run the CLI; return (seconds, peak tree PSS MB or None, stdout lines, exit code).

    Memory is sampled every ``interval`` seconds, or not at all. Reading
    /proc/PID/smaps_rollup walks the page tables of a 1 GB process: ten samples a second over
    three processes took a large share of a core from the run being timed (13.6 img/s against
    20.4 unsampled), so timed runs are not sampled and peak memory comes from separate runs.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smokerdet", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(interval or 1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    if interval:
        sampler.start()
    out, _ = proc.communicate(stdin)
    seconds = time.perf_counter() - t0
    stop.set()
    if interval:
        sampler.join()
    return seconds, (peak if interval else None), len(out.splitlines()), proc.returncode


def images_list(data: Path, n: int, folder: Path) -> list[Path]:
    """N image paths: symlinks to the dataset's photos, repeated as needed."""
    photos = [s.path.resolve() for s in find_dataset(data).get("all")]
    out = []
    for i in range(n):
        link = folder / f"{i:06d}_{photos[i % len(photos)].name}"
        link.symlink_to(photos[i % len(photos)])
        out.append(link)
    return out


def matmul_gflops(size: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * size**3 * repeat / (time.perf_counter() - t0) / 1e9


def model_gflops(model: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def forward_rate(
    model: torch.nn.Module, x: torch.Tensor, tta: bool, seconds: float = 4.0, **amp: Any
) -> float:
    """Images per second of the forward pass alone (both passes when the model uses TTA)."""
    with torch.inference_mode(), torch.autocast("cpu", **amp) if amp else _null():
        model(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            if tta:
                model(torch.flip(x, dims=[3]))
            n += len(x)
    return n / (time.perf_counter() - t0)


def parallel_forward_rate(
    model: torch.nn.Module, size: int, bs: int, tta: bool, procs: int, seconds: float = 6.0
) -> float:
    """Images per second of ``procs`` forked processes, each forwarding with one thread."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()

    def run() -> None:
        torch.set_num_threads(1)  # one thread: also what keeps a forked child off OpenMP
        x = torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last)
        queue.put(forward_rate(model, x, tta, seconds))

    children = [ctx.Process(target=run) for _ in range(procs)]
    for c in children:
        c.start()
    rates = [queue.get() for _ in children]
    for c in children:
        c.join()
    return sum(rates)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


# Kinds of row. Only measured throughputs of the model count toward the ceilings; "bound" is
# computed from FLOPs, "wall" is a duration.
FORWARD, PARALLEL, PIPELINE, E2E, WALL, BOUND = (
    "forward",
    "parallel",
    "pipeline",
    "end-to-end",
    "wall",
    "bound",
)


class Table:
    """The measured rows: each a list of repeated runs, summarised by median and spread."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.rows: list[dict[str, Any]] = []

    def measure(self, what: str, kind: str, run: Any, **extra: Any) -> dict[str, Any]:
        """Call ``run()`` ``repeats`` times; each call returns one value (img/s or seconds)."""
        runs = [float(run()) for _ in range(self.repeats)]
        row = {"what": what, "kind": kind, "runs": runs, **summary(runs), **extra}
        self.rows.append(row)
        print(f"  {what}: {row['median']:.2f} ({row['min']:.2f}-{row['max']:.2f})", file=sys.stderr)
        return row

    def best(self, *kinds: str) -> dict[str, Any] | None:
        rows = [r for r in self.rows if r["kind"] in kinds]
        return max(rows, key=lambda r: r["median"]) if rows else None


def summary(runs: list[float]) -> dict[str, float]:
    """Median, min, max and the spread (max - min) relative to the median."""
    ordered = sorted(runs)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    spread = (ordered[-1] - ordered[0]) / median if median else 0.0
    return {"median": median, "min": ordered[0], "max": ordered[-1], "spread": spread}


def measure_cli(args: argparse.Namespace, table: Table, model: str, paths: list[Path]) -> None:
    """End to end through the CLI (start-up included), and the peak memory when asked."""
    listing = "\n".join(str(p) for p in paths[: args.images])

    def many() -> float:
        s, _, lines, rc = run_cli(
            ["predict", "-", "--json", "--model", model, "--backend", "torch"], listing
        )
        assert rc == 0 and lines == args.images, (rc, lines)
        return args.images / s

    table.measure(f"smokerdet predict, {args.images} images", E2E, many)
    one = str(paths[0])
    table.measure(
        "smokerdet predict, 1 image (wall s)",
        WALL,
        lambda: run_cli(["predict", one, "--json", "--model", model, "--backend", "torch"], "")[0],
    )
    if args.memory_images:
        listing = "\n".join(str(p) for p in paths[: args.memory_images])
        s, rss, lines, rc = run_cli(
            ["predict", "-", "--json", "--model", model, "--backend", "torch"], listing, 0.25
        )
        assert rc == 0 and lines == args.memory_images
        table.rows.append({"what": f"smokerdet predict, {args.memory_images} images, memory",
                           "kind": WALL, "runs": [s], **summary([s]), "peak_rss_mb": rss})  # fmt: skip


def measure_naive(args: argparse.Namespace, table: Table, loaded: Any, paths: list[Path]) -> None:
    """PIL, transform, one forward per image: warmed up, channels_last like smokerdet on CPU."""
    model, tta = loaded.model.eval(), loaded.meta.tta == "hflip"
    model.to(memory_format=torch.channels_last)
    transform = eval_transform(loaded.meta.data_config)
    todo = paths[: args.naive_images]

    def loop(files: list[Path]) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for p in files:
                x = transform(load_image(p)).unsqueeze(0)
                x = x.contiguous(memory_format=torch.channels_last)
                torch.sigmoid(model(x))
                if tta:
                    model(torch.flip(x, dims=[3]))
        return len(files) / (time.perf_counter() - t0)

    loop(todo[:8])  # warm-up: first-call allocations, decoder and kernel selection
    table.measure("naive loop (PIL, transform, forward; batch 1, channels_last)", PIPELINE,
                  lambda: loop(todo))  # fmt: skip


def measure_in_process(
    args: argparse.Namespace, table: Table, loaded: Any, paths: list[Path]
) -> list[torch.Tensor]:
    """``smokerdet.predict()`` with the model loaded; returns the images' tensors."""
    import smokerdet

    model = str(loaded.path)

    def run(**kw: Any) -> float:
        t0 = time.perf_counter()
        n = sum(1 for _ in smokerdet.predict(paths, model=model, backend="torch", **kw))
        return n / (time.perf_counter() - t0)

    list(smokerdet.predict(paths[:16], model=model, backend="torch"))  # warm-up
    table.measure(f"smokerdet.predict() in-process, {len(paths)} images", PIPELINE, run)
    if args.sweep:
        for bs in (1, 2, 4, 8):
            for workers in (0, os.cpu_count() or 1):
                table.measure(f"smokerdet.predict(), batch {bs}, {workers} workers", PIPELINE,
                              lambda bs=bs, w=workers: run(batch_size=bs, workers=w))  # fmt: skip
    transform = eval_transform(loaded.meta.data_config)
    return [transform(load_image(p)) for p in paths]


def measure_forward(
    args: argparse.Namespace, table: Table, loaded: Any, items: list[torch.Tensor]
) -> None:
    """The forward pass alone, one process with every core: each cell counts to the ceiling."""
    from smokerdet.inference.batch import DEFAULT_BATCH_SIZE

    model, tta = loaded.model.eval(), loaded.meta.tta == "hflip"
    size = loaded.meta.data_config.input_size
    model.to(memory_format=torch.channels_last)
    bs = DEFAULT_BATCH_SIZE
    batches = [torch.stack(items[i : i + bs]).contiguous(memory_format=torch.channels_last)
               for i in range(0, len(items), bs)]  # fmt: skip

    def same_images() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model(b)
                if tta:
                    model(torch.flip(b, dims=[3]))
        return len(items) / (time.perf_counter() - t0)

    same_images()  # warm-up
    table.measure(f"forward only, same images, channels_last, batch {bs}", FORWARD, same_images)
    for fmt in ("contiguous", "channels_last"):
        layout = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        m = model.to(memory_format=layout)
        for bs in (1, 8, 32):
            x = torch.randn(bs, 3, size, size).contiguous(memory_format=layout)
            table.measure(f"forward only, random input, {fmt}, batch {bs}", FORWARD,
                          lambda m=m, x=x: forward_rate(m, x, tta, args.seconds))  # fmt: skip
            if args.bf16 and bs == 32:
                table.measure(f"forward only, random input, {fmt}, batch 32, bf16", FORWARD,
                              lambda m=m, x=x: forward_rate(m, x, tta, args.seconds,
                                                            dtype=torch.bfloat16))  # fmt: skip
    if args.compile:
        m = torch.compile(model.to(memory_format=torch.channels_last))
        x = torch.randn(32, 3, size, size).contiguous(memory_format=torch.channels_last)
        forward_rate(m, x, tta, 1.0)  # compile outside the timed runs
        table.measure("forward only, random input, channels_last, batch 32, torch.compile",
                      FORWARD, lambda: forward_rate(m, x, tta, args.seconds))  # fmt: skip


def measure_parallel(args: argparse.Namespace, table: Table, loaded: Any) -> None:
    """One forked process per core, one thread each: smokerdet's way on a CPU."""
    model, tta = loaded.model.eval(), loaded.meta.tta == "hflip"
    size = loaded.meta.data_config.input_size
    model.to(memory_format=torch.channels_last)
    cores = os.cpu_count() or 1
    for bs in (1, 4, 8):
        table.measure(f"forward only, {cores} processes x 1 thread, batch {bs}", PARALLEL,
                      lambda bs=bs: parallel_forward_rate(model, size, bs, tta, cores,
                                                          args.seconds * 1.5))  # fmt: skip
    gflop = model_gflops(model.to(memory_format=torch.contiguous_format), size) * (2 if tta else 1)
    table.measure(f"physical limit ({gflop:.2f} GFLOP/img over measured matmul GFLOP/s)", BOUND,
                  lambda: matmul_gflops(1024 if args.quick else 2048) / gflop)  # fmt: skip


def report(args: argparse.Namespace, table: Table, loaded: Any) -> dict[str, Any]:
    """Print the table and the headline; return the numbers for ``--json``."""
    one = table.best(FORWARD)
    par = table.best(PARALLEL)
    best = table.best(FORWARD, PARALLEL, PIPELINE, E2E)
    e2e = table.best(E2E)
    assert one and par and best and e2e
    print(f"model {loaded.name}: {loaded.meta.arch} at {loaded.meta.data_config.input_size}px, "
          f"TTA {loaded.meta.tta}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, {args.repeats} runs per cell")  # fmt: skip
    print(f"one-process ceiling: {one['median']:.1f} img/s ({one['what']})")
    print(f"multi-process ceiling: {par['median']:.1f} img/s ({par['what']})")
    print(f"best ceiling: {best['median']:.1f} img/s ({best['what']})")
    for r in table.rows:
        if r["kind"] == PIPELINE and r["median"] > one["median"]:
            print(f"note: {r['what']} ({r['median']:.1f} img/s) beats the one-process "
                  "forward-only ceiling: the forward-only cells do not reach the hardware's "
                  "best; trust the best ceiling")  # fmt: skip
    ratio = e2e["median"] / best["median"]
    lo, hi = e2e["min"] / best["median"], e2e["max"] / best["median"]
    print(f"headline: end to end {e2e['median']:.1f} img/s = {ratio:.2f}x the best ceiling "
          f"(runs {lo:.2f}-{hi:.2f}x)")  # fmt: skip
    print("\n| what | median | min-max | spread | x best |\n|---|---:|---:|---:|---:|")
    for r in table.rows:
        unit = "s" if r["kind"] == WALL else " img/s"
        x = f"{r['median'] / best['median']:.2f}" if r["kind"] not in (WALL, BOUND) else ""
        rss = f", peak {r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else ""
        print(f"| {r['what']}{rss} | {r['median']:.2f}{unit} | {r['min']:.2f}-{r['max']:.2f} "
              f"| {100 * r['spread']:.0f}% | {x} |")  # fmt: skip
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "model": loaded.name, "arch": loaded.meta.arch,
        "input_size": loaded.meta.data_config.input_size, "tta": loaded.meta.tta,
        "repeats": args.repeats, "quick": args.quick,
        "one_process_ceiling_img_s": one["median"], "parallel_ceiling_img_s": par["median"],
        "best_ceiling_img_s": best["median"], "best_ceiling_what": best["what"],
        "headline_e2e_over_best": ratio, "rows": table.rows,
    }  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or path (default: active)")
    parser.add_argument("--images", type=int, default=1000, help="end-to-end run")
    parser.add_argument("--memory-images", type=int, default=0, help="also a peak-RSS run")
    parser.add_argument("--naive-images", type=int, default=100)
    parser.add_argument("--steady-images", type=int, default=200, help="in-process run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per cell (at least 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="window per forward cell")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--sweep", action="store_true", help="also time predict() at batch 1-8, 0-N workers"
    )
    parser.add_argument(
        "--quick", action="store_true", help="few images, short windows: checks the script runs"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.images, args.naive_images, args.steady_images = 48, 16, 32
        args.repeats, args.seconds, args.memory_images = 3, 0.5, 0
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: a median of fewer runs has no spread")
    return args


def main() -> None:
    args = parse_args()
    loaded = load_model(args.model)
    table = Table(args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.images, args.memory_images, args.naive_images, args.steady_images)
        paths = images_list(args.data, n, Path(tmp))
        measure_cli(args, table, str(loaded.path), paths)
        measure_naive(args, table, loaded, paths)
        items = measure_in_process(args, table, loaded, paths[: args.steady_images])
    measure_forward(args, table, loaded, items)
    measure_parallel(args, table, loaded)
    result = report(args, table, loaded)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
