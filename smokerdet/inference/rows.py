"""The one prediction row: what ``predict`` prints (table, ``--json``, ``--csv``), what results
files and ``--merge`` carry, and what ``serve`` answers and its review page shows.

Its fields, in order, are :data:`FIELDS` (plus ``heatmap`` when heatmaps were asked for): the
JSON keys and the CSV header both come from here.

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
)
#: The field added when heatmaps were asked for: a PNG file (predict) or a data URL (serve).
HEATMAP = "heatmap"
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
    heatmap: str | None = None
    """The heatmap drawn for this image (only with heatmaps asked for)."""
    heatmaps_asked: bool = field(default=False, repr=False, compare=False)

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
        known = {f.name for f in fields(cls)} - {"heatmaps_asked"}
        kept = {k: v for k, v in row.items() if k in known}
        path, label, probability = (kept.pop(k, None) for k in ("path", "label", "probability"))
        return cls(str(path), label, probability, **kept, heatmaps_asked=HEATMAP in row)

    def to_dict(self) -> dict[str, Any]:
        """The row as a dict, in :data:`FIELDS` order; ``heatmap`` only when asked for."""
        return {k: getattr(self, k) for k in columns(self.heatmaps_asked)}

    def json_line(self) -> str:
        """The row as one JSON Lines record (``ensure_ascii``: an odd file name stays on one
        line), newline included."""
        return json.dumps(self.to_dict(), ensure_ascii=True) + "\n"

    def csv_cells(self, heatmaps: bool = False) -> list[Any]:
        """The row's CSV cells, in the order of :func:`columns` (``heatmaps``), each one
        :func:`spreadsheet_safe` (a file may be named ``=HYPERLINK(...).jpg``)."""
        return [spreadsheet_safe(getattr(self, k)) for k in columns(heatmaps)]


def columns(heatmaps: bool = False) -> tuple[str, ...]:
    """The JSON keys and CSV header of a row: :data:`FIELDS`, then ``heatmap`` if asked for."""
    return (*FIELDS, HEATMAP) if heatmaps else FIELDS
