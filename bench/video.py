#!/usr/bin/env python
"""Video and live-stream throughput: sampling a long 1080p clip, and watching a long stream.

Measures, with the shipped model (or ``--model``):

1. a ``--minutes`` (default 10) 1080p H.264 clip (25 fps, a keyframe every ``--gop`` frames,
   B-frames; made once from the example photos, kept at ``--clip``) sampled at ``--fps 2``
   and at every frame: decode time of ``smokerdet.scoring.video`` (packets held back, only
   what a wanted frame needs decoded) against decoding every frame, frames decoded by each;
2. the same clip end to end at ``--fps 2`` through the library (sample, score through the
   engine, find events), the goal being at most 60 s on the project's 2-core machine: with
   frames shrunk by FFmpeg to twice the model's input (``open_video(max_side=...)``), and at
   full size;
3. ``watch`` on a ``--stream-minutes`` (default 30) simulated stream: a local MJPEG server
   sending 1080p frames in real time at 25 fps (90 s not smoking, 30 s smoking, over and
   over) and dropping the connection every 5 minutes. Reports frames, drops, reconnects,
   events, the largest lag, and the process's RSS each minute (it must stay flat).

Every figure of parts 1 and 2 is the median of ``--repeats`` runs with its spread (min-max).

Example:
    python bench/video.py --json bench/results/video.json
    python bench/video.py --minutes 1 --stream-minutes 2 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smokerdet.scoring.events import EventRules, Sample, find_events  # noqa: E402
from smokerdet.scoring.video import Sampler, open_video  # noqa: E402

EXAMPLES = ROOT / "examples"
SIZE = (1920, 1080)
RATE = 25


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def picture(name: str) -> Image.Image:
    return Image.open(EXAMPLES / name).convert("RGB").resize(SIZE, Image.Resampling.BILINEAR)


def make_clip(path: Path, minutes: float, gop: int) -> Path:
    """A 1080p H.264 clip alternating 40 s not smoking and 20 s smoking, panning slowly."""
    import av

    if path.exists():
        return path
    shots = [np.asarray(picture("notsmoking_0001.jpg")), np.asarray(picture("smoking_0001.jpg"))]
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "g": str(gop), "bf": "2"}
        for i in range(round(minutes * 60 * RATE)):
            second = i / RATE
            base = shots[1] if second % 60 >= 40 else shots[0]
            frame = av.VideoFrame.from_ndarray(np.roll(base, i * 2, axis=1), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def sample_lazily(clip: Path, fps: float) -> tuple[int, int]:
    with open_video(clip, fps) as video:
        sampled = sum(1 for _ in video.frames())
        return sampled, video.decoded


def sample_decoding_all(clip: Path, fps: float) -> tuple[int, int]:
    import av

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sampler, sampled, decoded = Sampler(fps), 0, 0
        for frame in container.decode(stream):
            decoded += 1
            if sampler.take(frame.time):
                frame.to_image()
                sampled += 1
    return sampled, decoded


def timed(fn: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return spread(times), result


def end_to_end(
    clip: Path, engine: Any, fps: float, max_side: int | None, batch: int = 8
) -> dict[str, Any]:
    samples: list[Sample] = []
    pending: list[Any] = []

    def flush() -> None:
        probs = engine.score([f.image for f in pending])
        samples.extend(Sample(f.index, f.time, p) for f, p in zip(pending, probs, strict=True))
        pending.clear()

    with open_video(clip, fps, max_side=max_side) as video:
        for frame in video.frames():
            pending.append(frame)
            if len(pending) == batch:
                flush()
        if pending:
            flush()
    events = find_events(samples, EventRules(engine.meta.threshold))
    return {"frames": len(samples), "events": len(events)}


# --- the simulated stream -----------------------------------------------------------------


@contextmanager
def mjpeg_camera(minutes: float) -> Iterator[str]:
    """1080p MJPEG at 25 fps in real time; each connection drops after 5 minutes."""
    jpegs = []
    for name in ("notsmoking_0001.jpg", "smoking_0001.jpg"):
        buffer = io.BytesIO()
        picture(name).save(buffer, format="JPEG", quality=85)
        jpegs.append(buffer.getvalue())
    began = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
            self.end_headers()
            opened = time.monotonic()
            try:
                while time.monotonic() - opened < 300 and time.monotonic() - began < minutes * 60:
                    tick = time.monotonic()
                    data = jpegs[1] if (tick - began) % 120 >= 90 else jpegs[0]
                    self.wfile.write(
                        b"--f\r\nContent-Type: image/jpeg\r\n"
                        + f"Content-Length: {len(data)}\r\n\r\n".encode()
                        + data
                        + b"\r\n"
                    )
                    time.sleep(max(0.0, 1 / RATE - (time.monotonic() - tick)))
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cam.mjpg"
    finally:
        server.shutdown()
        server.server_close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def watch_stream(engine: Any, minutes: float) -> dict[str, Any]:
    from smokerdet.scoring.backoff import Backoff
    from smokerdet.scoring.watch import WatchConfig, watch

    stop = threading.Event()
    memory: list[float] = []
    events = 0

    def score(image: Image.Image) -> float:
        return engine.score([image])[0]

    def on_event(event: Any) -> None:
        nonlocal events
        events += event.state == "ended"

    def sample_memory() -> None:
        while not stop.wait(60):
            memory.append(round(rss_mb(), 1))

    cfg = WatchConfig(fps=2)
    options = dataclasses.replace(cfg.stream_options(), backoff=Backoff(first=0.2, cap=2))
    with mjpeg_camera(minutes) as url:
        timer = threading.Timer(minutes * 60, stop.set)
        timer.start()
        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        memory.append(round(rss_mb(), 1))
        began = time.monotonic()
        summary = watch(
            url,
            cfg,
            score,
            default_threshold=engine.meta.threshold,
            on_event=on_event,
            stop=stop,
            stream_options=options,
        )
        timer.cancel()
    return {
        "minutes": round((time.monotonic() - began) / 60, 2),
        "summary": summary.__dict__,
        "events_told": events,
        "rss_mb_each_minute": memory,
        "rss_growth_mb": round(max(memory) - memory[min(1, len(memory) - 1)], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the clip")
    parser.add_argument("--gop", type=int, default=50, help="frames between keyframes")
    parser.add_argument("--clip", type=Path, default=None, help="where the clip is kept")
    parser.add_argument("--stream-minutes", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from smokerdet.inference import open_engine

    clip_path = args.clip or Path(f"/tmp/smokerdet-bench-{args.minutes:g}min-g{args.gop}.mp4")
    began = time.perf_counter()
    clip = make_clip(clip_path, args.minutes, args.gop)
    print(
        f"clip {clip} ({clip.stat().st_size / 2**20:.0f} MiB), {time.perf_counter() - began:.0f} s"
    )
    engine = open_engine(args.model)
    report: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "model": engine.name,
        "clip": {"minutes": args.minutes, "size": SIZE, "rate": RATE, "gop": args.gop},
        "sampling": {},
    }
    for fps in (2.0, 0.0):
        for name, fn in (("lazy", sample_lazily), ("decode_all", sample_decoding_all)):
            seconds, (sampled, decoded) = timed(lambda fn=fn, fps=fps: fn(clip, fps), args.repeats)
            key = f"fps_{fps:g}_{name}"
            report["sampling"][key] = {"seconds": seconds, "sampled": sampled, "decoded": decoded}
            print(f"{key:22} {seconds['median']:7.1f} s  sampled {sampled}, decoded {decoded}")
    # Frames shrunk by FFmpeg to twice the model's input, then at full size (PIL shrinks them).
    for max_side in (2 * engine.meta.data_config.input_size, None):
        seconds, result = timed(lambda m=max_side: end_to_end(clip, engine, 2.0, m), args.repeats)
        key = f"end_to_end_fps_2_max_side_{max_side or 'full'}"
        report[key] = {"seconds": seconds, **result, "goal_seconds": 60}
        print(f"{key:34} {seconds['median']:7.1f} s  {result} (goal: 60 s)")
    if args.stream_minutes > 0:
        report["watch"] = watch_stream(engine, args.stream_minutes)
        print(json.dumps(report["watch"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
