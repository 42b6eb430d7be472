"""Stratified splits of labelled photos: held-out shares and cross-validation folds."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar


class Labelled(Protocol):
    """Anything with a photo's path and its label (0 not smoking, 1 smoking)."""

    @property
    def path(self) -> Path: ...

    @property
    def label(self) -> int: ...


Sample = TypeVar("Sample", bound=Labelled)


def stratified_split(
    samples: Sequence[Sample], fraction: float, seed: int, minimum: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split into (rest, held_out) with ``fraction`` of each class held out, deterministically.

    Each class holds out at least ``minimum`` photos (when it has them).
    """
    rest: list[Sample] = []
    held: list[Sample] = []
    for label in (0, 1):
        group = sorted((s for s in samples if s.label == label), key=lambda s: str(s.path))
        random.Random(f"{seed}-{label}").shuffle(group)
        n_held = max(round(len(group) * fraction), minimum)
        if n_held == 0 and len(group) >= 3:
            n_held = 1  # tiny folders still get every split
        held.extend(group[:n_held])
        rest.extend(group[n_held:])
    key: Callable[[Sample], str] = lambda s: str(s.path)  # noqa: E731
    return sorted(rest, key=key), sorted(held, key=key)
