"""Frames from a live source, kept coming: reconnects, sampling, and drops when scoring lags.

Sources (:func:`source_kind`):

- ``rtsp://``, ``http(s)://`` (MJPEG, HLS ``.m3u8``) and anything else FFmpeg opens as a
  stream: read with PyAV;
- ``http(s)://`` with ``every`` set: a snapshot URL fetched every ``every`` seconds with
  :func:`smokerdet.scoring.urls.fetch_snapshot` (a camera without a stream);
- ``/dev/videoN``: a local camera through FFmpeg's v4l2 input.

A reader thread takes frames from the source as fast as it sends them (a live source that is
not read falls behind) and hands on about ``fps`` a second, upright, through a one-frame
mailbox: when scoring is slower, the newer frame replaces the one waiting and the drop is
counted. Nothing else is kept, so memory stays flat however long it runs.

When the source drops or fails, the reader says so on stderr (logger ``smokerdet``, the URL's
credentials redacted) and opens it again after a capped exponential backoff with jitter,
forever, until ``stop`` is set. A source that never gave a frame is given ``connect_tries``
tries; one that cannot work (no such device, a codec FFmpeg cannot decode, no video) fails at
once. Both raise :class:`~smokerdet.errors.StreamError` from :meth:`LiveStream.frames`.

Example:
    >>> stop = threading.Event()
    >>> with LiveStream("rtsp://cam.local/live", StreamOptions(fps=2), stop) as stream:  # doctest: +SKIP
    ...     for frame in stream.frames():
    ...         print(frame.index, frame.time, frame.image.size)
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from smokerdet.data.images import load_image
from smokerdet.errors import ConfigError, ImageLoadError, StreamError, UrlError
from smokerdet.scoring.backoff import Backoff
from smokerdet.scoring.urls import FetchLimits, fetch_snapshot, is_url, redact
from smokerdet.scoring.video import (
    DEFAULT_FPS,
    Sampler,
    check_fps,
    is_video_path,
    quiet_ffmpeg,
    upright,
)

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("smokerdet")

SourceKind = Literal["stream", "snapshot", "device"]


def source_kind(source: str, every: float | None = None) -> SourceKind:
    """What kind of live source ``source`` is (see the module's docstring).

    Raises:
        ConfigError: ``every`` with a source that is not an http(s) URL, or a video file
            (names ``--every``, or says to use ``predict``).
    """
    if every is not None:
        if not is_url(source):
            raise ConfigError(
                f"--every polls a snapshot URL; {redact(source)} is not an http(s) URL"
            )
        return "snapshot"
    if source.startswith("/dev/"):
        return "device"
    if "://" not in source and (Path(source).is_file() or is_video_path(source)):
        raise ConfigError(
            f"{source} is a file, not a live source",
            hint=f"score a video file with: smokerdet predict {source}",
        )
    return "stream"


@dataclass(frozen=True)
class StreamOptions:
    """How a live source is read; tests shorten the waits."""

    fps: float = DEFAULT_FPS
    """Frames handed on a second (0: every frame); snapshots ignore it."""
    every: float | None = None
    """Seconds between two fetches of a snapshot URL; ``None`` for a stream or device."""
    backoff: Backoff = field(default_factory=Backoff)
    """Waits between reconnection attempts."""
    connect_tries: int = 4
    """Attempts to open a source that has never given a frame before giving up."""
    open_timeout: float = 10.0
    """Seconds to wait for the source to open."""
    read_timeout: float = 10.0
    """Seconds of silence after which an open source counts as dropped."""
    fetch: FetchLimits = field(default_factory=FetchLimits)
    """Limits of each snapshot fetch."""

    def __post_init__(self) -> None:
        check_fps(self.fps)
        if self.every is not None and not self.every > 0:
            raise ConfigError(f"--every must be more than 0 seconds, got {self.every:g}")
        if self.connect_tries < 1:
            raise ConfigError(f"--connect-tries must be at least 1, got {self.connect_tries}")


@dataclass(frozen=True)
class LiveFrame:
    """A frame handed on for scoring.

    Attributes:
        index: frames read from the source before it, since the stream started (across
            reconnects), so gaps show what was not scored.
        time: seconds since the stream started.
        wall: when it arrived, as a UNIX time.
        arrived: when it arrived, on the monotonic clock (for lag).
        image: the picture, upright RGB.
    """

    index: int
    time: float
    wall: float
    arrived: float
    image: Image.Image = field(repr=False)


@dataclass
class StreamStats:
    """Counts since the stream started; the reader thread updates them."""

    frames: int = 0
    """Frames read from the source."""
    sampled: int = 0
    """Frames handed to the mailbox (about fps a second)."""
    taken: int = 0
    """Frames taken out of it for scoring."""
    dropped: int = 0
    """Frames replaced in the mailbox before they were taken (scoring lagged)."""
    reconnects: int = 0
    """Times the source gave frames again after it had dropped."""
    failures: int = 0
    """Failed attempts to open or read the source."""
    connected: bool = False
    """Whether the source is giving frames now."""


class _Unusable(Exception):
    """The source cannot work as it is; trying again would not help while it never has."""


def _ca_file() -> str | None:
    cafile = ssl.get_default_verify_paths().cafile  # honours SSL_CERT_FILE
    return cafile if cafile and os.path.exists(cafile) else None


class LiveStream:
    """A live source read in a thread; iterate :meth:`frames` in one consumer."""

    def __init__(self, source: str, options: StreamOptions, stop: threading.Event) -> None:
        self.kind = source_kind(source, options.every)
        self.source = source
        self.shown = redact(source)
        """The source as messages show it, credentials redacted."""
        self.options = options
        self.stats = StreamStats()
        self._stop = stop
        self._cond = threading.Condition()
        self._latest: LiveFrame | None = None
        self._failure: BaseException | None = None
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="smokerdet-stream", daemon=True)

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def frames(self) -> Iterator[LiveFrame]:
        """The latest sampled frame each time the consumer is ready, until ``stop`` is set.

        Raises:
            StreamError: the source could not be opened (never gave a frame).
        """
        if self._thread.ident is None:
            self._started = time.monotonic()
            self._thread.start()
        while True:
            with self._cond:
                while self._latest is None and self._failure is None and not self._stop.is_set():
                    self._cond.wait(0.2)
                if self._failure is not None:
                    raise self._failure
                if self._stop.is_set():
                    return
                frame, self._latest = self._latest, None
            self.stats.taken += 1
            yield frame  # type: ignore[misc]

    def close(self, timeout: float | None = None) -> None:
        """Stop reading (this sets ``stop``) and wait for the reader, at most ``timeout`` s.

        A reader blocked on a silent source wakes within ``read_timeout``; it is a daemon
        thread, so a shorter ``timeout`` never holds the process up.
        """
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(self.options.read_timeout + 1 if timeout is None else timeout)

    # --- the reader thread -------------------------------------------------------------------

    def _offer(self, frame: LiveFrame) -> None:
        with self._cond:
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self.stats.sampled += 1
            self._cond.notify()

    def _run(self) -> None:
        try:
            self._keep_reading()
        except BaseException as e:  # a bug must reach the consumer, not die with the thread
            with self._cond:
                self._failure = e
                self._cond.notify()

    def _keep_reading(self) -> None:
        attempt = 0
        ever = False
        while not self._stop.is_set():
            got_frames = False
            try:
                for frame in self._connection():
                    if not got_frames:
                        got_frames, attempt = True, 0
                        self.stats.connected = True
                        if ever:
                            self.stats.reconnects += 1
                            log.warning("%s: reconnected", self.shown)
                        ever = True
                    self._offer(frame)
                reason = "the stream ended"
            except _Unusable as e:
                if not ever:
                    raise StreamError(f"{self.shown}: {e}", hint=_hint(self.kind)) from None
                reason = str(e)
            except (OSError, UrlError, ImageLoadError, StreamError) as e:
                reason = redact(_reason(e))
            self.stats.connected = False
            if self._stop.is_set():
                return
            self.stats.failures += 1
            if not ever and attempt + 1 >= self.options.connect_tries:
                raise StreamError(
                    f"{self.shown}: could not be opened after {attempt + 1} tries ({reason})",
                    hint=_hint(self.kind),
                )
            delay = self.options.backoff.delay(attempt)
            attempt += 1
            log.warning("%s: %s; trying again in %.3g s", self.shown, reason, delay)
            self._stop.wait(delay)

    def _connection(self) -> Iterator[LiveFrame]:
        if self.kind == "snapshot":
            return self._poll()
        return self._decode()

    def _frame(self, image: Image.Image) -> LiveFrame:
        now = time.monotonic()
        return LiveFrame(self.stats.frames - 1, now - self._started, time.time(), now, image)

    def _poll(self) -> Iterator[LiveFrame]:
        every = self.options.every or 1.0
        while not self._stop.is_set():
            began = time.monotonic()
            snap = fetch_snapshot(self.source, self.options.fetch)
            image = load_image(snap.data, name=self.shown)
            self.stats.frames += 1
            yield self._frame(image)
            self._stop.wait(max(0.0, every - (time.monotonic() - began)))

    def _decode(self) -> Iterator[LiveFrame]:
        import av

        quiet_ffmpeg()
        container = self._open()
        try:
            streams = container.streams.video
            if not streams:
                raise _Unusable("has no video stream")
            stream = streams[0]
            if stream.codec_context is None:
                raise _Unusable("its video codec cannot be decoded by this FFmpeg")
            sampler = Sampler(self.options.fps)
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return
                self.stats.frames += 1
                if sampler.take(time.monotonic() - self._started):
                    yield self._frame(upright(frame.to_image(), frame.rotation))
        except av.FFmpegError as e:
            raise StreamError(_reason(e)) from None
        finally:
            container.close()

    def _open(self) -> Any:
        import av

        opts = self.options
        options: dict[str, str] = {}
        fmt = None
        if self.kind == "device":
            if not os.path.exists(self.source):
                raise _Unusable("no such device")
            if not stat.S_ISCHR(os.stat(self.source).st_mode):
                raise _Unusable("is not a device")
            fmt = "v4l2"
        elif self.source.lower().startswith(("https://", "rtsps://")):
            options["tls_verify"] = "1"
            if cafile := _ca_file():
                options["ca_file"] = cafile
        try:
            return av.open(
                self.source,
                format=fmt,
                options=options,
                timeout=(opts.open_timeout, opts.read_timeout),
                metadata_errors="replace",
            )
        except (av.error.HTTPClientError, av.error.PermissionError) as e:
            raise _Unusable(_reason(e)) from None
        except av.FFmpegError as e:
            raise StreamError(_reason(e)) from None


def _reason(e: BaseException) -> str:
    # PyAV puts the URL (credentials and all) in str(e); its strerror is the reason alone.
    text = getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)
    return str(text or type(e).__name__).splitlines()[0][:200]


def _hint(kind: SourceKind) -> str:
    if kind == "device":
        return "list the cameras with: ls /dev/video*"
    if kind == "snapshot":
        return "open the URL in a browser: it must show a photo"
    return "check the URL plays in a player (ffplay or VLC), and the user and password in it"
