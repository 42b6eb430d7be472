"""``smokerdet watch``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from smokerdet.cli._options import JsonOpt, option
from smokerdet.scoring import WatchConfig

SourceArg = Annotated[
    str,
    typer.Argument(
        metavar="SOURCE",
        help="rtsp:// or http(s):// stream (MJPEG, HLS), a snapshot URL with --every, or a "
        "local camera (/dev/video0).",
    ),
]
WatchModelOpt = Annotated[
    str | None, option(WatchConfig, "model", "--model", "-m", metavar="NAME|PATH")
]
WatchThresholdOpt = Annotated[float | None, option(WatchConfig, "threshold")]
WatchFpsOpt = Annotated[float, option(WatchConfig, "fps", metavar="N")]
EveryOpt = Annotated[float | None, option(WatchConfig, "every", metavar="SECONDS")]
StartFramesOpt = Annotated[int, option(WatchConfig, "start_frames")]
StartWindowOpt = Annotated[int, option(WatchConfig, "start_window")]
EndFramesOpt = Annotated[int, option(WatchConfig, "end_frames")]
WebhookOpt = Annotated[str | None, option(WatchConfig, "webhook", metavar="URL")]
WatchSnapshotsOpt = Annotated[Path | None, option(WatchConfig, "snapshots", metavar="DIR")]
MetricsPortOpt = Annotated[int | None, option(WatchConfig, "metrics_port")]
MetricsHostOpt = Annotated[str, option(WatchConfig, "metrics_host", metavar="ADDRESS")]
WatchTokenOpt = Annotated[
    str | None, option(WatchConfig, "token", envvar="SMOKERDET_TOKEN", metavar="TOKEN")
]
ConnectTriesOpt = Annotated[int, option(WatchConfig, "connect_tries")]
MaxBackoffOpt = Annotated[float, option(WatchConfig, "max_backoff", metavar="SECONDS")]
TimeoutOpt = Annotated[float, option(WatchConfig, "timeout", metavar="SECONDS")]


def watch(
    source: SourceArg,
    model: WatchModelOpt = WatchConfig.model,
    threshold: WatchThresholdOpt = WatchConfig.threshold,
    fps: WatchFpsOpt = WatchConfig.fps,
    every: EveryOpt = WatchConfig.every,
    start_frames: StartFramesOpt = WatchConfig.start_frames,
    start_window: StartWindowOpt = WatchConfig.start_window,
    end_frames: EndFramesOpt = WatchConfig.end_frames,
    webhook: WebhookOpt = WatchConfig.webhook,
    snapshots: WatchSnapshotsOpt = WatchConfig.snapshots,
    metrics_port: MetricsPortOpt = WatchConfig.metrics_port,
    metrics_host: MetricsHostOpt = WatchConfig.metrics_host,
    token: WatchTokenOpt = WatchConfig.token,
    connect_tries: ConnectTriesOpt = WatchConfig.connect_tries,
    max_backoff: MaxBackoffOpt = WatchConfig.max_backoff,
    timeout: TimeoutOpt = WatchConfig.timeout,
    json_out: JsonOpt = False,
) -> None:
    """Watch a camera or stream and report smoking events as they happen.

    Runs until Ctrl-C or SIGTERM, then prints a summary (frames, events, reconnects) on
    stderr. A source that drops is reopened with capped backoff, said on stderr. Each event
    is printed when it starts and when it ends (a table line, or JSON Lines with --json).
    Credentials in a URL never appear in the output.

    \b
    Exit codes:
      0  stopped (Ctrl-C or SIGTERM)
      1  the source could never be opened, or another error
      2  bad usage

    Example:

    \b
        smokerdet watch rtsp://user:pass@camera.local/stream --snapshots events/
        smokerdet watch http://camera.local/snapshot.jpg --every 2 --json
    """
    from smokerdet.cli._output import render_watch_event, render_watch_summary
    from smokerdet.scoring import watch_with_model

    cfg = WatchConfig(
        model=model,
        threshold=threshold,
        fps=fps,
        every=every,
        start_frames=start_frames,
        start_window=start_window,
        end_frames=end_frames,
        webhook=webhook,
        snapshots=snapshots,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        token=token,
        connect_tries=connect_tries,
        max_backoff=max_backoff,
        timeout=timeout,
    )
    stop = threading.Event()
    with _stopping_on_signals(stop):
        summary = watch_with_model(
            source, cfg, on_event=lambda e: render_watch_event(e, json_out), stop=stop
        )
    render_watch_summary(summary)


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the watch ends cleanly, with its summary) instead of
    raising: the library does not catch KeyboardInterrupt."""

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
