"""Stratified splits of labelled photos (held-out shares and cross-validation folds), and the
one check that a set holds enough photos of each class for what it is used for.

Both splitters deal from the same seeded order: each class sorted by path, then shuffled by
``random.Random(f"{seed}-{label}")``. A held-out share takes the head of each class; folds
deal each class round-robin. The same photos and seed therefore always give the same split,
whatever order the photos were found in.

Example:
    >>> from pathlib import Path
    >>> from smokerdet.data.layout import Sample
    >>> photos = [Sample(Path(f"p{i}.jpg"), i % 2) for i in range(8)]
    >>> [len(f) for f in stratified_folds(photos, 3, seed=7)]
    [4, 2, 2]
    >>> check_per_class(photos, 5, purpose="to train", photos="photos")
    Traceback (most recent call last):
    ...
    smokerdet.errors.DatasetLayoutError: too few photos to train: each class needs at least 5 photos; found 4 smoking, 4 not_smoking
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from smokerdet.errors import ConfigError, DatasetLayoutError


class Labelled(Protocol):
    """Anything with a photo's path and its label (0 not smoking, 1 smoking)."""

    @property
    def path(self) -> Path: ...

    @property
    def label(self) -> int: ...


Sample = TypeVar("Sample", bound=Labelled)


def _path(sample: Labelled) -> str:
    return str(sample.path)


def _dealing_order(samples: Sequence[Sample], seed: int) -> list[list[Sample]]:
    """Each class (not smoking, then smoking), sorted by path and shuffled by the seed."""
    groups = []
    for label in (0, 1):
        group = sorted((s for s in samples if s.label == label), key=_path)
        random.Random(f"{seed}-{label}").shuffle(group)
        groups.append(group)
    return groups


def stratified_split(
    samples: Sequence[Sample], fraction: float, seed: int, minimum: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """Split into (rest, held_out) with ``fraction`` of each class held out, deterministically.

    Each class holds out at least ``minimum`` photos (when it has them); a class of three or
    more photos holds out at least one. Both lists come sorted by path.
    """
    rest: list[Sample] = []
    held: list[Sample] = []
    for group in _dealing_order(samples, seed):
        n_held = max(round(len(group) * fraction), minimum)
        if n_held == 0 and len(group) >= 3:
            n_held = 1  # tiny folders still get every split
        held.extend(group[:n_held])
        rest.extend(group[n_held:])
    return sorted(rest, key=_path), sorted(held, key=_path)


def stratified_folds(samples: Sequence[Sample], k: int, seed: int) -> list[list[Sample]]:
    """``k`` folds: each class dealt round-robin from its seeded order (not smoking first).

    Fold sizes differ by at most one per class; every fold holds both classes when each class
    has at least ``k`` photos (see :func:`check_per_class`).
    """
    folds: list[list[Sample]] = [[] for _ in range(k)]
    for group in _dealing_order(samples, seed):
        for i, sample in enumerate(group):
            folds[i % k].append(sample)
    return folds


def class_counts(samples: Sequence[Labelled]) -> dict[str, int]:
    """How many photos of each class: ``{"smoking": n, "not_smoking": m}``."""
    smoking = sum(1 for s in samples if s.label == 1)
    return {"smoking": smoking, "not_smoking": len(samples) - smoking}


def check_per_class(
    samples: Sequence[Labelled],
    need: int,
    *,
    purpose: str,
    photos: str,
    why: str = "",
    flag: str | None = None,
    hint: str | None = None,
) -> None:
    """Refuse ``samples`` unless each class holds at least ``need`` photos.

    Args:
        samples: the labelled photos.
        need: the photos each class needs.
        purpose: what they are for, completing "too few photos ...": ``"to train"``.
        photos: what they are, completing "each class needs at least N ...":
            ``"training photos"``.
        why: said after the count, e.g. ``" (2 to validate, 2 to train)"``.
        flag: the option whose value is ``need`` (a number of folds, at least 2), e.g.
            ``"--cv"``: the error is then a usage error naming it and the largest value
            that fits.
        hint: what to do instead; default: add photos of the short class.

    Raises:
        ConfigError: with ``flag``: it asks for more folds than the smallest class has photos.
        DatasetLayoutError: without ``flag``: too few photos of a class for ``purpose``.
    """
    counts = class_counts(samples)
    short = min(counts, key=counts.__getitem__)  # on a tie: smoking
    have = counts[short]
    if have >= need:
        return
    found = f"found {counts['smoking']} smoking, {counts['not_smoking']} not_smoking"
    if flag is not None:
        raise ConfigError(
            f"{flag} {need} is larger than the smallest class of the {photos}{why}; {found}",
            hint=f"use {flag} {have} or less, or add {short} photos"
            if have >= 2
            else f"add {short} photos",
        )
    raise DatasetLayoutError(
        f"too few photos {purpose}: each class needs at least {need} {photos}{why}; {found}",
        hint=hint or f"add {short} photos",
    )
