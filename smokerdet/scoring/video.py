"""Frames from a video file (PyAV, FFmpeg in its wheel): sampled at ``--fps``, upright, cheap.

:func:`open_video` opens a file and checks it can be decoded; :meth:`Video.frames` yields
:class:`VideoFrame` (frame number, time in seconds, upright RGB ``PIL.Image``) about ``fps``
times a second of video: the first frame at or after each multiple of ``1 / fps`` seconds
(``fps`` 0: every frame).

Low rates do not decode every frame. Packets are read (cheap) and held back from the decoder
until one shows a frame at or after the next wanted time; then the held packets of its group
of pictures (from the last keyframe on) are decoded, those that no other frame refers to
skipped. A group of pictures with no wanted frame is never decoded, nor is the tail of a
group after its last wanted frame. Unlike seeking this needs no index, so it works the same
on MP4, MKV, AVI and WebM, on files with a broken index, and on truncated files.

The display matrix (a phone's "rotate 90°") is applied, like players do. A file that ends
early yields what decodes, and :attr:`Video.notes` says so.

Example:
    >>> with open_video("clip.mp4", fps=2) as video:  # doctest: +SKIP
    ...     for f in video.frames():
    ...         print(f.index, f.time, f.image.size)
    0 0.0 (1920, 1080)
    12 0.5 (1920, 1080)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from smokerdet.data.images import MAX_IMAGE_PIXELS
from smokerdet.errors import ConfigError, VideoError

if TYPE_CHECKING:
    import av.container
    import av.video.stream
    from PIL import Image

#: Frames a second sampled by default: enough to see a cigarette raised, cheap to score.
DEFAULT_FPS = 2.0
#: File suffixes taken as videos (FFmpeg reads more; these are the ones a folder walk picks).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".3gp"}
    | {".wmv", ".flv", ".ogv"}
)
#: Compressed bytes held back from the decoder at most; past it they are decoded anyway, so a
#: file with very rare keyframes sampled very slowly cannot fill the memory.
MAX_HELD_BYTES = 64 * 2**20

_EPS = 1e-6


def is_video_path(path: str | Path) -> bool:
    """Whether ``path``'s suffix is a video's (see :data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_fps(fps: float) -> None:
    """Refuse a sampling rate that means nothing.

    Raises:
        ConfigError: ``fps`` is negative or not a number (names ``--fps``).
    """
    if not math.isfinite(fps) or fps < 0:
        raise ConfigError(
            f"--fps must be 0 (every frame) or more, got {fps:g}",
            hint=f"--fps {DEFAULT_FPS:g} samples {DEFAULT_FPS:g} frames a second of video",
        )


class Sampler:
    """Picks the first frame at or after each multiple of ``1 / fps`` seconds (all at 0)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.next = 0.0

    def due(self, t: float) -> bool:
        """Whether a frame at ``t`` would be taken."""
        return self.fps == 0 or t >= self.next - _EPS

    def take(self, t: float) -> bool:
        """Whether to take the frame at ``t``; if so, the next one is wanted a period later."""
        if not self.due(t):
            return False
        if self.fps:
            self.next = (math.floor(t * self.fps + _EPS) + 1) / self.fps
        return True


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself.

    Attributes:
        path: the file.
        codec: the video codec's name (``h264``).
        width: stored frame width, before rotation.
        height: stored frame height, before rotation.
        rate: average frames a second, if known.
        duration: length in seconds, if known.
    """

    path: Path
    codec: str
    width: int
    height: int
    rate: float | None
    duration: float | None


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its number in presentation order, its time, and the picture."""

    index: int
    time: float
    image: Image.Image = field(repr=False)


def quiet_ffmpeg() -> None:
    """Silence FFmpeg's own log (it would print every damaged packet, and URLs with passwords)."""
    import av.logging

    # FFmpeg prints every damaged packet; our notes and errors say what matters, once.
    av.logging.set_level(av.logging.PANIC)


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).splitlines()[0][:200]


def open_video(path: str | Path, fps: float = DEFAULT_FPS, *, max_side: int | None = None) -> Video:
    """Open a video file for sampling at ``fps`` frames a second (0: every frame).

    ``max_side`` shrinks frames whose long side is larger to that many pixels (aspect kept)
    while FFmpeg converts them to RGB: much cheaper than shrinking a 1080p or 4K picture with
    PIL afterwards, as the model's preprocessing would (twice the model's input size loses
    nothing it would see).

    Raises:
        ConfigError: ``fps`` is negative (names ``--fps``).
        VideoError: the file is missing, empty, not a video FFmpeg reads, has no video stream
            (audio only), or a video codec FFmpeg cannot decode.
    """
    check_fps(fps)
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    return Video(Path(path), fps, max_side)


class Video:
    """An open video file; :meth:`frames` reads it once. Use it as a context manager."""

    def __init__(self, path: Path, fps: float, max_side: int | None = None) -> None:
        self.notes: list[str] = []
        """What a reader of the results should know: a clamped --fps, a truncated file."""
        self._container = _open_container(path)
        try:
            self._stream = _video_stream(self._container, path)
            self.info = _info(self._container, self._stream, path)
        except BaseException:
            self._container.close()
            raise
        self.fps = fps
        self.max_side = max_side
        self.decoded = 0
        """Frames the decoder produced (after :meth:`frames`): what sampling saved shows here."""
        rate = self.info.rate
        if fps and rate and fps > rate + _EPS:
            self.notes.append(
                f"--fps {fps:g} is above the file's {rate:g} frames a second: every frame is scored"
            )
            self.fps = 0.0

    def __enter__(self) -> Video:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Free the file and the decoder."""
        self._container.close()

    def frames(self) -> Iterator[VideoFrame]:
        """The sampled frames, in order, upright RGB.

        A file cut short or damaged yields what decodes and adds a note to :attr:`notes`.

        Raises:
            VideoError: not a single frame could be decoded.
        """
        reader = _Reader(self._stream, Sampler(self.fps), self.max_side)
        yielded = 0
        for frame in reader.run(self._container):
            yielded += 1
            yield frame
        self.decoded = reader.decoded
        self.notes += reader.notes(self.info.duration, self.info.rate)
        if not yielded:
            raise VideoError(
                self.info.path,
                "no frame could be decoded (the file is damaged or cut short)",
                hint="check that it plays in a video player",
            )


def _open_container(path: Path) -> av.container.InputContainer:
    import av

    quiet_ffmpeg()
    if path.is_dir():
        raise VideoError(path, "is a directory")
    try:
        with open(path, "rb") as f:
            if not f.read(1):
                raise VideoError(path, "empty file (0 bytes)")
    except FileNotFoundError:
        raise VideoError(path, "no such file") from None
    except PermissionError:
        raise VideoError(path, "permission denied") from None
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise VideoError(
            path,
            f"not a video FFmpeg can read ({_reason(e)})",
            hint="check that it plays in a video player; an MP4 whose recording was cut off "
            "before it finished has no index and cannot be read",
        ) from None


def _video_stream(
    container: av.container.InputContainer, path: Path
) -> av.video.stream.VideoStream:
    streams = container.streams
    if not streams.video:
        what = "audio only" if streams.audio else "no video stream"
        raise VideoError(path, f"has no video to look at ({what})")
    stream = streams.video[0]
    codec = stream.codec_context
    if codec is None:
        raise VideoError(
            path,
            "its video codec cannot be decoded by this FFmpeg",
            hint="convert it first, e.g. ffmpeg -i FILE -c:v libx264 converted.mp4",
        )
    if stream.width * stream.height > MAX_IMAGE_PIXELS:
        raise VideoError(
            path, f"frames too large: {stream.width}x{stream.height} (limit {MAX_IMAGE_PIXELS:,})"
        )
    stream.thread_type = "AUTO"
    return stream


def _info(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    duration: float | None = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    return VideoInfo(
        path=path,
        codec=stream.codec_context.name,
        width=stream.width,
        height=stream.height,
        rate=float(rate) if rate else None,
        duration=duration,
    )


def rgb(frame: Any, max_side: int | None = None) -> Image.Image:
    """A decoded frame as an RGB image, its long side shrunk to ``max_side`` if larger."""
    width, height = frame.width, frame.height
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    if scale == 1.0:
        return frame.to_image()
    size = max(1, round(width * scale)), max(1, round(height * scale))
    return frame.to_image(width=size[0], height=size[1], interpolation="AREA")


def upright(image: Image.Image, rotation: int) -> Image.Image:
    """``image`` turned as a frame's display matrix says (``rotation``: degrees, counterclockwise)."""
    from PIL import Image

    # The display matrix's angle is counterclockwise, like PIL's.
    turn = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }.get(round(rotation) % 360)
    if turn is not None:
        return image.transpose(turn)
    if round(rotation) % 360:
        return image.rotate(rotation, expand=True)
    return image


class _Order:
    """A frame's number in presentation order, from the timestamps of the packets read."""

    def __init__(self) -> None:
        self._pending: list[int] = []
        self._before = 0

    def saw(self, pts: int) -> None:
        heapq.heappush(self._pending, pts)

    def index(self, pts: int) -> int:
        while self._pending and self._pending[0] < pts:
            heapq.heappop(self._pending)
            self._before += 1
        return self._before


class _Reader:
    """One pass over a file: hold packets back, decode what a wanted frame needs."""

    def __init__(
        self, stream: av.video.stream.VideoStream, sampler: Sampler, max_side: int | None
    ) -> None:
        self.stream = stream
        self.sampler = sampler
        self.max_side = max_side
        self.order = _Order()
        self.tb: Fraction = stream.time_base or Fraction(1, 90000)
        self.start: int | None = stream.start_time
        self.decoded = 0
        self.damaged = 0
        self.last_packet: float | None = None
        self.stopped: str | None = None

    def time(self, pts: int) -> float:
        if self.start is None:
            self.start = pts
        return max(0.0, float((pts - self.start) * self.tb))

    def run(self, container: av.container.InputContainer) -> Iterator[VideoFrame]:
        import av

        held: list[Any] = []
        held_bytes = 0
        try:
            for packet in container.demux(self.stream):
                if packet.size == 0:  # the demuxer's end marker
                    continue
                if packet.is_keyframe:
                    held, held_bytes = [], 0  # the decoder needs nothing before a keyframe
                held.append(packet)
                held_bytes += packet.size
                if packet.pts is None:
                    wanted = True  # no timestamp to judge it by: decode it to see
                else:
                    self.order.saw(packet.pts)
                    self.last_packet = self.time(packet.pts)
                    wanted = self.sampler.due(self.last_packet)
                if wanted or held_bytes > MAX_HELD_BYTES:
                    yield from self._decode(held)
                    held, held_bytes = [], 0
        except av.FFmpegError as e:
            self.stopped = _reason(e)
        yield from self._decode([None])

    def _decode(self, packets: list[Any]) -> Iterator[VideoFrame]:
        import av

        codec = self.stream.codec_context
        for i, packet in enumerate(packets):
            # Held packets come before any wanted frame: a frame nothing refers to is not needed.
            codec.skip_frame = "NONREF" if i < len(packets) - 1 else "DEFAULT"
            try:
                frames = self.stream.decode(packet)
            except av.FFmpegError:
                self.damaged += 1
                continue
            for frame in frames:
                self.decoded += 1
                picked = self._pick(frame)
                if picked is not None:
                    yield picked

    def _pick(self, frame: Any) -> VideoFrame | None:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:  # no timestamp at all: count frames at the stream's rate
            rate = float(self.stream.average_rate or 25)
            t, index = self.decoded / rate, self.decoded - 1
        else:
            t, index = self.time(pts), self.order.index(pts)
        if not self.sampler.take(t):
            return None
        return VideoFrame(index, round(t, 6), upright(rgb(frame, self.max_side), frame.rotation))

    def notes(self, duration: float | None, rate: float | None) -> list[str]:
        found = []
        if self.damaged:
            found.append(f"{self.damaged} damaged packet(s) could not be decoded and were skipped")
        end = self.last_packet
        slack = max(0.5, 2 / rate) if rate else 0.5
        if self.stopped is not None:
            found.append(f"reading stopped at {end or 0:.1f} s: {self.stopped}")
        elif duration and end is not None and end + slack < duration:
            found.append(
                f"the file ends at {end:.1f} s of its {duration:.1f} s: it looks truncated"
            )
        return found
