"""Watch a live source: score its frames, find smoking events, tell people and machines.

:func:`watch` drives a :class:`~smokerdet.scoring.streams.LiveStream`, scores each frame it
hands on with the ``score_frame`` it is given (the engine, wired by the CLI), runs the
:class:`~smokerdet.scoring.events.EventTracker`, and for each event that starts or ends calls
``on_event``, POSTs it to ``--webhook``, and at its end writes its best frame to
``--snapshots``. With ``--metrics-port`` it serves ``/metrics`` (frames, events, reconnects,
lag). It returns when ``stop`` is set (the CLI sets it on Ctrl-C and SIGTERM), closing any
event under way, with a :class:`WatchSummary`.

Example:
    >>> from smokerdet.inference import open_engine
    >>> engine = open_engine("default")  # doctest: +SKIP
    >>> summary = watch(  # doctest: +SKIP
    ...     "rtsp://cam.local/live",
    ...     WatchConfig(),
    ...     lambda image: engine.score([image])[0],
    ...     default_threshold=engine.meta.threshold,
    ...     on_event=print,
    ... )
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from smokerdet._io import atomic_write_bytes
from smokerdet.errors import ConfigError
from smokerdet.scoring.backoff import Backoff
from smokerdet.scoring.events import (
    DEFAULT_END_FRAMES,
    DEFAULT_START_FRAMES,
    DEFAULT_START_WINDOW,
    Event,
    EventRules,
    EventTracker,
)
from smokerdet.scoring.streams import LiveStream, StreamOptions
from smokerdet.scoring.urls import is_url, redact
from smokerdet.scoring.video import DEFAULT_FPS, check_fps
from smokerdet.scoring.webhooks import WebhookOptions, WebhookSender

if TYPE_CHECKING:
    from PIL import Image

    from smokerdet.telemetry import MetricsServer, WatchCounts


@dataclass
class WatchConfig:
    """Options of ``smokerdet watch`` (the source is its argument)."""

    model: str | None = None
    """Model name, folder, .onnx file, 'latest' or 'default' (the shipped model)."""
    threshold: float | None = None
    """Probability from which a frame counts as smoking. Default: the model's."""
    fps: float = DEFAULT_FPS
    """Frames scored a second (0: as many as scoring keeps up with); frames that arrive while
    one is scored are skipped, and counted."""
    every: float | None = None
    """Poll a snapshot URL (a camera's /snapshot.jpg) every SECONDS instead of reading a
    stream."""
    start_frames: int = DEFAULT_START_FRAMES
    """An event starts when this many of the last --start-window scored frames are smoking."""
    start_window: int = DEFAULT_START_WINDOW
    """The scored frames --start-frames is counted in."""
    end_frames: int = DEFAULT_END_FRAMES
    """An event ends after this many scored frames in a row are not smoking."""
    webhook: str | None = None
    """POST each event (start and end) as JSON to this URL."""
    snapshots: Path | None = None
    """Write each event's best frame as a JPEG into this folder (created if needed); without
    it no frame is stored anywhere."""
    metrics_port: int | None = None
    """Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port)."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics listen on."""
    token: str | None = None
    """Require 'Authorization: Bearer TOKEN' on /metrics."""
    connect_tries: int = 4
    """Tries to open a source that has never given a frame before giving up (exit 1); once
    it has, it is reopened forever."""
    max_backoff: float = 30.0
    """Longest wait between two reconnection attempts, in seconds."""
    timeout: float = 10.0
    """Seconds to open the source, and of silence after which it counts as dropped."""

    def __post_init__(self) -> None:
        check_fps(self.fps)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be between 0 and 1, got {self.threshold}")
        EventRules(0.5, self.start_frames, self.start_window, self.end_frames)
        if self.every is not None and not (math.isfinite(self.every) and self.every > 0):
            raise ConfigError(f"--every must be more than 0 seconds, got {self.every:g}")
        if self.webhook is not None and not is_url(self.webhook):
            raise ConfigError(
                f"--webhook must be an http:// or https:// URL, not {redact(self.webhook)!r}"
            )
        if self.snapshots is not None and self.snapshots.exists() and not self.snapshots.is_dir():
            raise ConfigError(f"--snapshots {self.snapshots} is a file, not a folder")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"--metrics-port must be between 0 and 65535, got {self.metrics_port}"
            )
        if self.connect_tries < 1:
            raise ConfigError(f"--connect-tries must be at least 1, got {self.connect_tries}")
        for name in ("max_backoff", "timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be more than 0, got {value:g}")

    def stream_options(self) -> StreamOptions:
        """How the source is read, from these options."""
        return StreamOptions(
            fps=self.fps,
            every=self.every,
            backoff=Backoff(first=1.0, factor=2.0, cap=self.max_backoff),
            connect_tries=self.connect_tries,
            open_timeout=self.timeout,
            read_timeout=self.timeout,
        )


class HasProbability(Protocol):
    """A prediction row, or anything else with ``probability``."""

    probability: float


@dataclass(frozen=True)
class WatchEvent:
    """An event as ``on_event``, ``--json`` and the webhook see it.

    Attributes:
        state: ``started`` or ``ended``.
        source: the source, credentials redacted.
        start: when it started (ISO 8601, UTC).
        end: when it ended, or ``None`` when it has just started.
        peak_probability: the highest p(smoking) so far.
        best_frame: the number of the frame that reached it (frames read from the source).
        best_time: that frame's time, in seconds since watching began.
        snapshot: the JPEG of that frame under --snapshots (ended events only), or ``None``.
    """

    state: Literal["started", "ended"]
    source: str
    start: str
    end: str | None
    peak_probability: float
    best_frame: int
    best_time: float
    snapshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """For JSON."""
        return asdict(self)


@dataclass(frozen=True)
class WatchSummary:
    """What a watch saw, told when it stops."""

    source: str
    seconds: float
    frames: int
    scored: int
    dropped: int
    events: int
    reconnects: int
    lag_max: float = 0.0
    """The largest age of a frame when its score was ready, in seconds."""
    webhook_sent: int = 0
    webhook_failed: int = 0


@dataclass
class _Run:
    """The state of one watch, read by /metrics from its own thread."""

    stream: LiveStream
    hook: WebhookSender | None
    started_wall: float
    scored: int = 0
    events: int = 0
    lag: float = 0.0
    lag_max: float = 0.0

    def counts(self) -> WatchCounts:
        from smokerdet.telemetry import WatchCounts

        s = self.stream.stats
        return WatchCounts(
            frames=s.frames,
            scored=self.scored,
            dropped=s.dropped,
            events=self.events,
            reconnects=s.reconnects,
            webhook_failures=self.hook.stats.failed if self.hook else 0,
            lag_seconds=self.lag,
            connected=s.connected,
        )


def watch(
    source: str,
    cfg: WatchConfig,
    score_frame: Callable[[Image.Image], float | HasProbability],
    *,
    default_threshold: float,
    model_name: str = "model",
    on_event: Callable[[WatchEvent], None] | None = None,
    stop: threading.Event | None = None,
    stream_options: StreamOptions | None = None,
    webhook_options: WebhookOptions | None = None,
) -> WatchSummary:
    """Watch ``source`` until ``stop`` is set; see the module's docstring.

    Args:
        source: an RTSP/HTTP(S) stream URL, a snapshot URL (with ``cfg.every``), or a device.
        cfg: the options.
        score_frame: p(smoking) of one upright RGB frame: a float, or a row with
            ``probability``.
        default_threshold: the model's threshold, used when ``cfg.threshold`` is ``None``.
        model_name: what ``/metrics`` calls the model.
        on_event: called in this thread for each event that starts or ends.
        stop: set it (from a signal handler, another thread) to stop; closing sets it too.
        stream_options: how to read the source (default: from ``cfg``; tests shorten waits).
        webhook_options: how to POST (default: :class:`WebhookOptions`).

    Raises:
        StreamError: the source could not be opened (never gave a frame).
        ConfigError: a bad option, or a --metrics-port that cannot be listened on.
    """
    stop = stop or threading.Event()
    threshold = default_threshold if cfg.threshold is None else cfg.threshold
    tracker = EventTracker(
        EventRules(threshold, cfg.start_frames, cfg.start_window, cfg.end_frames)
    )
    stream = LiveStream(source, stream_options or cfg.stream_options(), stop)
    hook = WebhookSender(cfg.webhook, webhook_options) if cfg.webhook else None
    run = _Run(stream, hook, time.time())
    metrics: MetricsServer | None = None
    began = time.monotonic()
    try:
        if cfg.metrics_port is not None:
            metrics = _serve_metrics(run, cfg, model_name, threshold)
        if cfg.snapshots is not None:
            cfg.snapshots.mkdir(parents=True, exist_ok=True)
        for frame in stream.frames():
            probability = _probability(score_frame(frame.image))
            run.scored += 1
            run.lag = time.monotonic() - frame.arrived
            run.lag_max = max(run.lag_max, run.lag)
            keep = frame.image if cfg.snapshots is not None else None
            changed = tracker.update(frame.index, frame.time, probability, keep)
            if changed is not None:
                _tell(run, cfg, changed, on_event)
        last = tracker.finish()
        if last is not None:
            _tell(run, cfg, last, on_event)
    finally:
        stream.close(timeout=2.0)
        if hook is not None:
            hook.close()
        if metrics is not None:
            metrics.close()
    return WatchSummary(
        source=stream.shown,
        seconds=round(time.monotonic() - began, 3),
        frames=stream.stats.frames,
        scored=run.scored,
        dropped=stream.stats.dropped,
        events=run.events,
        reconnects=stream.stats.reconnects,
        lag_max=round(run.lag_max, 3),
        webhook_sent=hook.stats.sent if hook else 0,
        webhook_failed=hook.stats.failed if hook else 0,
    )


def _probability(result: float | HasProbability) -> float:
    return float(result) if isinstance(result, (int, float)) else float(result.probability)


def _serve_metrics(run: _Run, cfg: WatchConfig, model_name: str, threshold: float) -> MetricsServer:
    from smokerdet.telemetry import start_metrics_server, watch_registry

    registry = watch_registry(run.counts, model_name, threshold)
    return start_metrics_server(
        registry, cfg.metrics_port or 0, host=cfg.metrics_host, token=cfg.token
    )


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="milliseconds")


def _tell(
    run: _Run, cfg: WatchConfig, event: Event, on_event: Callable[[WatchEvent], None] | None
) -> None:
    ended = event.end is not None
    snapshot = None
    if ended:
        run.events += 1
        if cfg.snapshots is not None and event.best is not None:
            snapshot = _write_snapshot(cfg.snapshots, run, event)
    told = WatchEvent(
        state="ended" if ended else "started",
        source=run.stream.shown,
        start=_iso(run.started_wall + event.start),
        end=_iso(run.started_wall + event.end) if event.end is not None else None,
        peak_probability=round(event.peak_probability, 4),
        best_frame=event.best_frame,
        best_time=round(event.best_time, 3),
        snapshot=snapshot,
    )
    if run.hook is not None:
        run.hook.send(told.to_dict())
    if on_event is not None:
        on_event(told)


def _write_snapshot(folder: Path, run: _Run, event: Event) -> str:
    import io

    stamp = datetime.fromtimestamp(run.started_wall + event.best_time, tz=timezone.utc)
    path = folder / f"smoking-{stamp:%Y%m%dT%H%M%S}-{run.events:04d}.jpg"
    buffer = io.BytesIO()
    event.best.save(buffer, format="JPEG", quality=90)
    atomic_write_bytes(path, buffer.getvalue())
    event.best = None  # the picture is on disk; let it go
    return str(path)


def watch_with_model(
    source: str,
    cfg: WatchConfig,
    *,
    on_event: Callable[[WatchEvent], None] | None = None,
    stop: threading.Event | None = None,
    stream_options: StreamOptions | None = None,
    webhook_options: WebhookOptions | None = None,
) -> WatchSummary:
    """:func:`watch` with ``cfg.model`` loaded (ONNX Runtime when it has an ONNX file): each
    frame goes through the one batch scorer, as ``predict`` scores a video's frames.

    Raises:
        ModelNotFoundError, CheckpointError: no usable model (before the source is opened).
        StreamError, ConfigError: as :func:`watch`.
    """
    from smokerdet.inference import decode_image, open_engine, score_decoded

    engine = open_engine(cfg.model)
    data = engine.meta.data_config

    def score_frame(image: Image.Image) -> float:
        scored = score_decoded(engine, [decode_image("frame", image, data)])[0]
        # A frame that cannot be preprocessed (never seen in practice) is not smoking: one
        # odd frame must not stop a camera watched for days.
        return 0.0 if scored.probability is None else scored.probability

    return watch(
        source,
        cfg,
        score_frame,
        default_threshold=engine.meta.threshold,
        model_name=engine.name,
        on_event=on_event,
        stop=stop,
        stream_options=stream_options,
        webhook_options=webhook_options,
    )
