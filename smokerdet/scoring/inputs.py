"""Predict's three kinds of input, each scored through the one batch scorer into rows.

A photo is a file, scored by :func:`smokerdet.inference.score_paths` (worker processes and
all). A video file (:func:`smokerdet.scoring.video.is_video_path`) is decoded here with PyAV,
sampled at ``--fps``, and its frames are scored in batches by
:func:`smokerdet.inference.score_decoded`: one row per sampled frame with its ``frame`` and
``time``, or with ``--events`` one row per smoking event (:mod:`smokerdet.scoring.events`).
An ``http(s)://`` URL is fetched once (:func:`smokerdet.scoring.urls.fetch_snapshot`) and
its bytes decoded like an upload. Whatever goes wrong with one input becomes its row's
``error`` (a URL's credentials redacted); the run goes on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from smokerdet._io import atomic_write_bytes
from smokerdet.errors import ConfigError, UrlError, VideoError
from smokerdet.inference import (
    Prediction,
    Scored,
    decode_image,
    decode_upload,
    score_decoded,
)
from smokerdet.inference.batch import DEFAULT_BATCH_SIZE, write_heatmap
from smokerdet.scoring.events import Event, EventRules, EventTracker
from smokerdet.scoring.urls import FetchLimits, fetch_snapshot, is_url, redact
from smokerdet.scoring.video import DEFAULT_FPS, Video, VideoFrame, is_video_path, open_video

if TYPE_CHECKING:
    from smokerdet.inference import Decoded, Engine, Familiarity

log = logging.getLogger("smokerdet")

InputKind = Literal["photo", "video", "url"]

#: Frames scored at once through ONNX Runtime: a video has many, and batching them beats
#: one at a time (photos are spread over worker processes instead).
ONNX_FRAME_BATCH = 4

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def input_kind(path: str) -> InputKind:
    """Whether an input is a snapshot URL, a video file (by its suffix) or a photo."""
    if is_url(path):
        return "url"
    return "video" if is_video_path(path) else "photo"


def check_snapshot_dir(snapshots: str | Path | None, events: bool) -> Path | None:
    """The ``--snapshots`` folder, created, or None.

    Raises:
        ConfigError: ``--snapshots`` without ``--events``, or it is a file.
    """
    if snapshots is None:
        return None
    if not events:
        raise ConfigError(
            "--snapshots writes the best frame of each event: add --events",
            hint="smokerdet predict clip.mp4 --events --snapshots DIR",
        )
    folder = Path(snapshots).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--snapshots {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--snapshots {folder}: cannot create it ({e.strerror or e})") from None
    return folder


@dataclass(frozen=True)
class Scoring:
    """What every row of one predict run shares: the model, its threshold, the options."""

    engine: Engine
    cut: float
    names: list[str]
    heatmaps: Path | None = None
    familiarity: Familiarity | None = None
    batch_size: int | None = None
    fps: float = DEFAULT_FPS
    events: bool = False
    snapshots: Path | None = None
    limits: FetchLimits = FetchLimits()

    def row(self, scored: Scored, path: str, **extra: object) -> Prediction:
        """The row of one scored photo or frame."""
        p = Prediction.of(
            scored, path=path, threshold=self.cut, model=self.engine.name, names=self.names,
            heatmaps_asked=self.heatmaps is not None,
        )  # fmt: skip
        return replace(p, events_asked=self.events, **extra)  # type: ignore[arg-type]

    def error_row(self, path: str, error: str) -> Prediction:
        """The row of an input that could not be scored."""
        return Prediction(
            path,
            None,
            None,
            threshold=self.cut,
            model=self.engine.name,
            error=error,
            heatmaps_asked=self.heatmaps is not None,
            events_asked=self.events,
        )

    def score(self, items: list[Decoded]) -> list[Scored]:
        """One batch through the one batch scorer."""
        sink = partial(write_heatmap, self.heatmaps) if self.heatmaps is not None else None
        return score_decoded(self.engine, items, heatmap=sink, familiarity=self.familiarity)

    @property
    def frame_batch(self) -> int:
        """Frames per forward pass."""
        if self.batch_size:
            return self.batch_size
        return ONNX_FRAME_BATCH if self.engine.backend == "onnx" else DEFAULT_BATCH_SIZE


# ---------------------------------------------------------------------------------------------
# Snapshot URLs


def url_row(url: str, s: Scoring) -> Prediction:
    """The row of one snapshot URL: fetched within ``s.limits``, decoded like an upload."""
    shown = redact(url)
    try:
        snap = fetch_snapshot(url, s.limits)
    except UrlError as e:
        return s.error_row(shown, e.reason)
    keep = s.heatmaps is not None
    decoded = decode_upload(shown, snap.data, s.engine.meta.data_config, keep)
    return s.row(s.score([decoded])[0], shown)


# ---------------------------------------------------------------------------------------------
# Video files


def video_rows(path: str, s: Scoring) -> Iterator[Prediction]:
    """The rows of one video file: one per sampled frame, or with ``s.events`` one per event
    (one row for a video without any). A video that cannot be read gives one error row."""
    try:
        video = open_video(path, s.fps, max_side=2 * s.engine.meta.data_config.input_size)
    except VideoError as e:
        yield s.error_row(path, e.reason)
        return
    with video:
        rows = _event_rows(path, video, s) if s.events else _frame_rows(path, video, s)
        try:
            yield from rows
        except VideoError as e:  # not a single frame decoded
            yield s.error_row(path, e.reason)
            return
        for note in video.notes:
            log.warning("%s: %s", path, note)


def _notes(video: Video) -> str | None:
    return "; ".join(video.notes) or None


def _own_size(video: Video, frame: VideoFrame) -> tuple[int, int]:
    """The frame's upright size at full scale (``open_video`` shrinks large frames)."""
    w, h = video.info.width, video.info.height
    turned = (frame.image.width >= frame.image.height) != (w >= h)
    return (h, w) if turned else (w, h)


def _scored(path: str, video: Video, s: Scoring) -> Iterator[tuple[VideoFrame, Scored]]:
    """The sampled frames with their scores, batch by batch."""
    cfg, keep = s.engine.meta.data_config, s.heatmaps is not None
    batch: list[VideoFrame] = []

    def flush() -> list[tuple[VideoFrame, Scored]]:
        items = [
            decode_image(f"{path}#t={f.time:.3f}", f.image, cfg, keep, _own_size(video, f))
            for f in batch
        ]
        return list(zip(batch, s.score(items), strict=True))

    for frame in video.frames():
        batch.append(frame)
        if len(batch) >= s.frame_batch:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _frame_rows(path: str, video: Video, s: Scoring) -> Iterator[Prediction]:
    # The last row is held back: the notes of a file cut short are known only at its end.
    held: Prediction | None = None
    for frame, scored in _scored(path, video, s):
        row = s.row(scored, path, frame=frame.index, time=frame.time, notes=_notes(video))
        if held is not None:
            yield held
        held = row
    if held is not None:
        yield replace(held, notes=_notes(video))


def _event_rows(path: str, video: Video, s: Scoring) -> Iterator[Prediction]:
    tracker = EventTracker(EventRules(s.cut))
    ended: list[Event] = []
    peak: tuple[float, VideoFrame, Scored] | None = None
    size: tuple[int, int] | None = None
    for frame, scored in _scored(path, video, s):
        if scored.probability is None:
            continue
        size = _own_size(video, frame)
        if peak is None or scored.probability > peak[0]:
            peak = (scored.probability, frame, scored)
        # The picture is kept (for its snapshot) only with --snapshots.
        payload = (frame.image if s.snapshots is not None else None, scored.heatmap)
        changed = tracker.update(frame.index, frame.time, scored.probability, payload)
        if changed is not None and changed.end is not None:
            ended.append(changed)
    last = tracker.finish()
    ended += [last] if last is not None else []
    notes = _notes(video)
    if not ended and peak is not None:  # no event: the video's one row, at its peak
        p, frame, scored = peak
        row = s.row(scored, path, frame=frame.index, time=frame.time, notes=notes)
        yield replace(row, peak_probability=p)
    for k, event in enumerate(ended):
        yield _event_row(path, event, k, size, notes, s)


def _event_row(
    path: str,
    event: Event,
    k: int,
    size: tuple[int, int] | None,
    notes: str | None,
    s: Scoring,
) -> Prediction:
    image, heatmap = event.best or (None, None)
    snapshot = None
    if s.snapshots is not None and image is not None:
        snapshot = write_snapshot(s.snapshots, path, k, event.best_time, image)
    return Prediction(
        path,
        s.names[1],
        event.peak_probability,
        threshold=s.cut,
        model=s.engine.name,
        width=size[0] if size else None,
        height=size[1] if size else None,
        frame=event.best_frame,
        time=event.best_time,
        notes=notes,
        heatmap=heatmap,
        start=event.start,
        end=event.end,
        peak_probability=event.peak_probability,
        snapshot=snapshot,
        heatmaps_asked=s.heatmaps is not None,
        events_asked=True,
    )


def snapshot_name(path: str, k: int, time: float) -> str:
    """A safe, unique JPEG name for event ``k`` of a video: its stem, a hash of its path,
    the event's number and its best frame's time."""
    stem = _UNSAFE.sub("_", Path(path).stem).strip("._")[:60] or "video"
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{stem}-{digest}-event{k + 1}-{time:.2f}s.jpg"


def write_snapshot(folder: Path, path: str, k: int, time: float, image: object) -> str:
    """Write an event's best frame as a JPEG into ``folder``, atomically; return its path."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)  # type: ignore[attr-defined]
    target = folder / snapshot_name(path, k, time)
    atomic_write_bytes(target, buffer.getvalue())
    return str(target)
