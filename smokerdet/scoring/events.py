"""Smoking events from frame scores: hysteresis, so one odd frame neither starts nor ends one.

An event starts when at least ``start_frames`` of the last ``start_window`` sampled frames are
at or above the threshold, and ends after ``end_frames`` sampled frames in a row below it.
Its ``start`` is the time of the first frame above the threshold in that window, its ``end``
the time of the first frame below it after the last one above (so a 4 s scene of smoking,
sampled at 2 fps, gives ``end - start`` of 4 s within one sampled frame). Each event keeps
its peak probability and the frame that reached it, with an optional payload (the image, for
``--snapshots``; without it nothing but numbers is kept).

The defaults are counted in sampled frames; at the default ``--fps 2``:

- start 2 of 3 (1 s of smoking seen within 1.5 s): a single frame over the threshold (a pen,
  a straw, a blurry hand) starts nothing, and a single miss (the cigarette hidden for a
  moment) does not delay the start by more than one frame;
- end after 4 below (2 s): lowering the hand or turning away for a moment does not split one
  cigarette into several events, and the end is still said within 2 s.

:class:`EventTracker` works online, one frame at a time (``watch``); :func:`find_events` runs
it over a whole file's frames. Pure Python: no numpy, no images looked at.

Example:
    >>> rules = EventRules(threshold=0.5)
    >>> probs = [0.1, 0.9, 0.8, 0.9, 0.2, 0.1, 0.1, 0.1, 0.1]
    >>> [(e.start, e.end, e.peak_probability) for e in
    ...  find_events([Sample(i, i / 2, p) for i, p in enumerate(probs)], rules)]
    [(0.5, 2.0, 0.9)]
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from smokerdet.errors import ConfigError

DEFAULT_START_FRAMES = 2
DEFAULT_START_WINDOW = 3
DEFAULT_END_FRAMES = 4


@dataclass(frozen=True)
class EventRules:
    """When an event starts and ends (see the module's docstring for the defaults' reasons)."""

    threshold: float
    """Probability from which a frame counts as smoking (``>=``, like a photo's label)."""
    start_frames: int = DEFAULT_START_FRAMES
    """Frames at or above the threshold, among the last --start-window, that start an event."""
    start_window: int = DEFAULT_START_WINDOW
    """How many of the latest sampled frames --start-frames is counted in."""
    end_frames: int = DEFAULT_END_FRAMES
    """Sampled frames in a row below the threshold that end an event."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.start_window < 1:
            raise ConfigError(f"--start-window must be at least 1, got {self.start_window}")
        if not 1 <= self.start_frames <= self.start_window:
            raise ConfigError(
                f"--start-frames must be between 1 and --start-window ({self.start_window}), "
                f"got {self.start_frames}"
            )
        if self.end_frames < 1:
            raise ConfigError(f"--end-frames must be at least 1, got {self.end_frames}")


@dataclass(frozen=True)
class Sample:
    """One scored frame: its number, its time in seconds, p(smoking) and an optional payload."""

    frame: int
    time: float
    probability: float
    payload: Any = None


@dataclass
class Event:
    """A stretch of smoking.

    Attributes:
        start: time of its first frame at or above the threshold, in seconds.
        end: time of the first frame below the threshold after its last one above it (the last
            frame's time when the input ended first); ``None`` while it goes on.
        peak_probability: the highest p(smoking) in it.
        best_frame: the number of the frame with that probability.
        best_time: that frame's time, in seconds.
        frames: how many of its sampled frames were at or above the threshold.
        best: the payload given with the best frame (its image), or ``None``.
    """

    start: float
    end: float | None
    peak_probability: float
    best_frame: int
    best_time: float
    frames: int = 0
    best: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The event's numbers, for JSON (without the payload)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "best"}

    def _see(self, s: Sample) -> None:
        self.frames += 1
        if s.probability > self.peak_probability:
            self.peak_probability, self.best_frame, self.best_time = s.probability, s.frame, s.time
            self.best = s.payload


class EventTracker:
    """Feed it frames in order; it says when an event starts and when it ends."""

    def __init__(self, rules: EventRules) -> None:
        self.rules = rules
        self._window: deque[Sample] = deque(maxlen=rules.start_window)
        self._open: Event | None = None
        self._below = 0
        self._first_below = 0.0
        self._last_time = 0.0

    @property
    def ongoing(self) -> Event | None:
        """The event under way, if any (still changing: copy it to keep it)."""
        return self._open

    def update(
        self, frame: int, time: float, probability: float, payload: Any = None
    ) -> Event | None:
        """Take the next sampled frame.

        Returns:
            The event that changed with this frame: a copy of one that just started (its
            ``end`` is ``None``), or one that just ended; ``None`` when nothing changed.
        """
        s = Sample(frame, time, probability, payload)
        self._last_time = time
        if self._open is None:
            return self._maybe_start(s)
        if probability >= self.rules.threshold:
            self._below = 0
            self._open._see(s)
            return None
        self._below += 1
        if self._below == 1:
            self._first_below = time
        if self._below < self.rules.end_frames:
            return None
        return self._close(self._first_below)

    def finish(self) -> Event | None:
        """End the input: close the event under way, if any, and return it."""
        if self._open is None:
            return None
        return self._close(self._first_below if self._below else self._last_time)

    def _maybe_start(self, s: Sample) -> Event | None:
        self._window.append(s)
        hits = [x for x in self._window if x.probability >= self.rules.threshold]
        if s.probability < self.rules.threshold or len(hits) < self.rules.start_frames:
            return None
        first = hits[0]
        event = Event(
            first.time, None, first.probability, first.frame, first.time, 1, first.payload
        )
        for x in hits[1:]:
            event._see(x)
        self._open, self._below = event, 0
        self._window.clear()
        return dataclasses.replace(event)

    def _close(self, end: float) -> Event:
        event, self._open = self._open, None
        assert event is not None
        event.end = end
        self._below = 0
        return event


def find_events(samples: Iterable[Sample], rules: EventRules) -> list[Event]:
    """All events of a finished input (a video file's sampled frames, in order)."""
    tracker = EventTracker(rules)
    ended = []
    for s in samples:
        changed = tracker.update(s.frame, s.time, s.probability, s.payload)
        if changed is not None and changed.end is not None:
            ended.append(changed)
    last = tracker.finish()
    return [*ended, last] if last is not None else ended
