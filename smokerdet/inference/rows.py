"""The one prediction row: what ``predict`` prints (table, ``--json``, ``--csv``), what results
files and ``--merge`` carry, and what ``serve`` answers and its review page shows.

Its fields, in order, are :data:`FIELDS` (plus ``heatmap`` when heatmaps were asked for, and
:data:`EVENT_FIELDS` when events were): the JSON keys and the CSV header both come from here.
A photo's row has ``frame`` and ``time`` None; a video frame's row gives its number and its
time in seconds; an event's row (``predict --events``) gives its best frame and its span.

Example:
    >>> row = Prediction("a.jpg", "smoking", 0.93, threshold=0.5, model="default")
    >>> list(row.to_dict())[:4]
    ['path', 'label', 'probability', 'threshold']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smokerdet.inference.batch import Scored

#: The row's fields, in the order JSON and CSV give them.
FIELDS = (
    "path",
    "label",
    "probability",
    "threshold",
    "model",
    "error",
    "familiar",
    "familiarity",
    "width",
    "height",
    "sha256",
    "frame",
    "time",
    "notes",
)
#: The field added when heatmaps were asked for: a PNG file (predict) or a data URL (serve).
HEATMAP = "heatmap"
#: The fields added by ``predict --events``: an event's span, its peak and its snapshot.
EVENT_FIELDS = ("start", "end", "peak_probability", "snapshot")

#: First characters that make a spreadsheet evaluate a cell as a formula, quoted or not.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string that could start a formula gets a
    leading ``'`` (the OWASP rule for CSV injection), since quoting alone does not stop
    ``"=HYPERLINK(...)"`` from being evaluated; numbers and ``None`` pass unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass(frozen=True)
class Prediction:
    """One image's result. ``label`` and ``probability`` are None when ``error`` says why."""

    path: str
    label: str | None
    probability: float | None
    _: KW_ONLY
    threshold: float
    model: str
    error: str | None = None
    familiar: bool | None = None
    """Whether the photo looks like the model's training photos (None: the model has no
    familiarity stats, or the photo has no score)."""
    familiarity: float | None = None
    """``cut / distance`` from the training photos: familiar from 1.0 up (see
    :mod:`smokerdet.inference.familiarity`)."""
    width: int | None = None
    """The photo's own width in pixels (upright, full scale); ``height`` likewise."""
    height: int | None = None
    sha256: str | None = None
    """The SHA-256 of the photo's bytes (of a file, only when it could be decoded)."""
    frame: int | None = None
    """A video frame's number in presentation order (an event's: its best frame); None for a
    photo."""
    time: float | None = None
    """That frame's time in the video, in seconds."""
    notes: str | None = None
    """What a reader should know about the input (a clamped --fps, a truncated video)."""
    heatmap: str | None = None
    """The heatmap drawn for this image (only with heatmaps asked for)."""
    start: float | None = None
    """An event's first smoking frame's time, in seconds (only with events asked for; None on
    a video's row without an event)."""
    end: float | None = None
    """The time of the first frame after the event, in seconds (or the video's last)."""
    peak_probability: float | None = None
    """The highest p(smoking) of the event, or of the video when it has none."""
    snapshot: str | None = None
    """The JPEG of the event's best frame (``--snapshots``)."""
    heatmaps_asked: bool = field(default=False, repr=False, compare=False)
    events_asked: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        scored: Scored,
        *,
        path: str,
        threshold: float,
        model: str,
        names: Sequence[str],
        heatmaps_asked: bool = False,
    ) -> Prediction:
        """The row of a scored photo: labelled ``names[1]`` from ``threshold`` up, else
        ``names[0]``; familiar from a familiarity of 1.0 up."""
        p, fam = scored.probability, scored.familiarity
        return cls(
            path,
            None if p is None else names[1] if p >= threshold else names[0],
            p,
            threshold=threshold,
            model=model,
            error=scored.error,
            familiar=None if fam is None else bool(fam >= 1.0),
            familiarity=fam,
            width=scored.width,
            height=scored.height,
            sha256=scored.sha256,
            heatmap=scored.heatmap,
            heatmaps_asked=heatmaps_asked,
        )

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Prediction:
        """A row read back from JSON (a results file); fields it lacks are None."""
        known = {f.name for f in fields(cls)} - {"heatmaps_asked", "events_asked"}
        kept = {k: v for k, v in row.items() if k in known}
        path, label, probability = (kept.pop(k, None) for k in ("path", "label", "probability"))
        return cls(
            str(path),
            label,
            probability,
            **kept,
            heatmaps_asked=HEATMAP in row,
            events_asked=EVENT_FIELDS[0] in row,
        )

    def to_dict(self) -> dict[str, Any]:
        """The row as a dict, in :data:`FIELDS` order; ``heatmap`` and the event fields only
        when asked for."""
        return {k: getattr(self, k) for k in columns(self.heatmaps_asked, self.events_asked)}

    def json_line(self) -> str:
        """The row as one JSON Lines record (``ensure_ascii``: an odd file name stays on one
        line), newline included."""
        return json.dumps(self.to_dict(), ensure_ascii=True) + "\n"

    def csv_cells(self, heatmaps: bool = False, events: bool = False) -> list[Any]:
        """The row's CSV cells, in the order of :func:`columns` (``heatmaps``, ``events``), each
        one :func:`spreadsheet_safe` (a file may be named ``=HYPERLINK(...).jpg``)."""
        return [spreadsheet_safe(getattr(self, k)) for k in columns(heatmaps, events)]


def columns(heatmaps: bool = False, events: bool = False) -> tuple[str, ...]:
    """The JSON keys and CSV header of a row: :data:`FIELDS`, then ``heatmap`` and
    :data:`EVENT_FIELDS` if asked for."""
    return (*FIELDS, *((HEATMAP,) if heatmaps else ()), *(EVENT_FIELDS if events else ()))
