#!/usr/bin/env python
"""How fast is ``smokerdet predict`` against what the hardware allows?

Measures, for one model (architecture and input size as stored in it):

1. ``smokerdet predict --json`` end to end on N images (a subprocess: start-up included);
   with ``--memory-images M``, a second run on M images gives the peak memory (PSS of the
   process and its workers);
2. a naive loop: PIL open, the model's transform, one forward per image;
3. the forward pass alone on pre-made tensors, contiguous and channels_last, batch 1 and 32:
   the ceiling for (1) as the issue defines it (one process using every core); and the
   forward pass in one process per core, one thread each, which is how smokerdet runs on a
   CPU: the parallel ceiling;
4. the physical limit: the model's FLOPs over the machine's measured fp32 matmul FLOP/s;

and optionally bf16 autocast. Prints a table; ``--json FILE`` also writes the numbers.

Example:
    python bench/predict.py --images 1000 --json bench/results/predict.json
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

from smokerdet.checkpoint import load_model
from smokerdet.data import eval_transform, find_dataset, load_image

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or path (default: active)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--memory-images", type=int, default=0, help="also a peak-RSS run")
    parser.add_argument("--naive-images", type=int, default=100)
    parser.add_argument("--steady-images", type=int, default=200, help="in-process run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--sweep", action="store_true", help="also time predict() at batch 1-8, 0-1 workers"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    loaded = load_model(args.model)
    model, cfg = loaded.model.eval(), loaded.meta.data_config
    size = cfg.input_size
    tta = loaded.meta.tta == "hflip"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = images_list(args.data, max(args.images, args.memory_images), Path(tmp))
        model_args = ["--model", str(loaded.path)]
        listing = "\n".join(str(p) for p in paths[: args.images])
        s, rss, lines, rc = run_cli(["predict", "-", "--json", *model_args], listing)
        assert rc == 0 and lines == args.images, (rc, lines)
        rows.append({"what": f"smokerdet predict, {args.images} images", "img_s": args.images / s})
        one = str(paths[0])
        s1, rss1, _, _ = run_cli(["predict", one, "--json", *model_args], "", interval=0.1)
        rows.append({"what": "smokerdet predict, 1 image (wall s)", "wall_s": s1,
                     "peak_rss_mb": rss1})  # fmt: skip
        if args.memory_images:
            listing = "\n".join(str(p) for p in paths[: args.memory_images])
            s, rss, lines, rc = run_cli(
                ["predict", "-", "--json", *model_args], listing, interval=0.25
            )
            assert rc == 0 and lines == args.memory_images
            rows.append({"what": f"smokerdet predict, {args.memory_images} images",
                         "img_s": args.memory_images / s, "peak_rss_mb": rss})  # fmt: skip

        transform = eval_transform(cfg)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for p in paths[: args.naive_images]:
                x = transform(load_image(p)).unsqueeze(0)
                torch.sigmoid(model(x))
                if tta:
                    model(torch.flip(x, dims=[3]))
        rows.append({"what": "naive loop (PIL, transform, forward; batch 1)",
                     "img_s": args.naive_images / (time.perf_counter() - t0)})  # fmt: skip

    # In-process, model loaded: the pipeline against the forward pass on the same batches.
    import smokerdet
    from smokerdet.inference import DEFAULT_BATCH_SIZE

    with tempfile.TemporaryDirectory() as tmp:
        paths = images_list(args.data, args.steady_images, Path(tmp))
        list(smokerdet.predict(paths[:16], model=str(loaded.path)))
        t0 = time.perf_counter()
        list(smokerdet.predict(paths, model=str(loaded.path)))
        rows.append({"what": f"smokerdet.predict() in-process, {len(paths)} images",
                     "img_s": len(paths) / (time.perf_counter() - t0)})  # fmt: skip
        if args.sweep:
            for bs in (1, 2, 4, 8):
                for workers in (0, os.cpu_count() or 1):
                    t0 = time.perf_counter()
                    list(smokerdet.predict(paths, model=str(loaded.path), batch_size=bs,
                                           workers=workers))  # fmt: skip
                    rows.append({"what": f"smokerdet.predict(), batch {bs}, {workers} workers",
                                 "img_s": len(paths) / (time.perf_counter() - t0)})  # fmt: skip
        items = [transform(load_image(p)) for p in paths]
    model.to(memory_format=torch.channels_last)
    bs = DEFAULT_BATCH_SIZE
    batches = [torch.stack(items[i : i + bs]) for i in range(0, len(items), bs)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            b = b.contiguous(memory_format=torch.channels_last)
            model(b)
            if tta:
                model(torch.flip(b, dims=[3]))
    rows.append({"what": f"forward only, same images, batch {bs}",
                 "img_s": len(items) / (time.perf_counter() - t0)})  # fmt: skip
    # The ceiling: one process, all cores, best of layouts and batch 1 / 32.
    ceiling = 0.0
    for fmt in ("contiguous", "channels_last"):
        fmt_ = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        m = model.to(memory_format=fmt_)
        for bs in (1, 8, 32):
            x = torch.randn(bs, 3, size, size).contiguous(memory_format=fmt_)
            r = forward_rate(m, x, tta)
            ceiling = max(ceiling, r) if bs in (1, 32) else ceiling
            rows.append({"what": f"forward only, random input, {fmt}, batch {bs}", "img_s": r})
            if args.bf16 and bs == 32:
                rows.append({"what": f"forward only, random input, {fmt}, batch 32, bf16",
                             "img_s": forward_rate(m, x, tta, dtype=torch.bfloat16)})  # fmt: skip
    # What the cores can do when each runs its own copy of the model (smokerdet's CPU path).
    model.to(memory_format=torch.channels_last)
    cores = os.cpu_count() or 1
    parallel = 0.0
    for bs in (1, 4):
        r = parallel_forward_rate(model, size, bs, tta, cores)
        parallel = max(parallel, r)
        rows.append({"what": f"forward only, {cores} processes x 1 thread, batch {bs}",
                     "img_s": r})  # fmt: skip
    if args.compile:
        m = torch.compile(model.to(memory_format=torch.channels_last))
        x = torch.randn(32, 3, size, size).contiguous(memory_format=torch.channels_last)
        rows.append({"what": "forward only, random input, channels_last, batch 32, torch.compile",
                     "img_s": forward_rate(m, x, tta)})  # fmt: skip
    gflop = model_gflops(model.to(memory_format=torch.contiguous_format), size) * (2 if tta else 1)
    peak = matmul_gflops()
    rows.append({"what": f"physical limit ({gflop:.2f} GFLOP/img at {peak:.0f} GFLOP/s)",
                 "img_s": peak / gflop})  # fmt: skip

    print(f"model {loaded.name}: {loaded.meta.arch} at {size}px, TTA {loaded.meta.tta}, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} cores")  # fmt: skip
    print(f"ceiling (one process, best of batch 1/32, both layouts): {ceiling:.1f} img/s; "
          f"parallel ceiling ({cores} processes x 1 thread): {parallel:.1f} img/s")  # fmt: skip
    print(f"{'what':<62} {'img/s':>8} {'x ceil':>7} {'x par':>6} {'peak mem':>9}")
    for r in rows:
        rate = f"{r['img_s']:.1f}" if "img_s" in r else f"{r['wall_s']:.2f}s"
        ratio = f"{r['img_s'] / ceiling:.2f}" if "img_s" in r else ""
        ratio_p = f"{r['img_s'] / parallel:.2f}" if "img_s" in r else ""
        rss = f"{r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else ""
        print(f"{r['what']:<62} {rate:>8} {ratio:>7} {ratio_p:>6} {rss:>9}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "model": loaded.name, "arch": loaded.meta.arch,
            "input_size": size, "tta": loaded.meta.tta, "ceiling_img_s": ceiling,
            "parallel_ceiling_img_s": parallel, "rows": rows,
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
