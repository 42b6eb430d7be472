"""Datasets of decoded photos for training and validation."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smokerdet.data.images import load_image
from smokerdet.errors import ImageLoadError

if TYPE_CHECKING:
    from smokerdet.data.layout import Sample

# ---------------------------------------------------------------------------------------------
# Datasets for the DataLoader (plain sequences: no torch import at module level)


@dataclass
class LoadReport:
    """What happened while reading a list of images."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def decode_all(
    samples: Sequence[Sample],
    *,
    max_side: int | None = None,
    threads: int | None = None,
    on_skip: Callable[[ImageLoadError], None] | None = None,
) -> tuple[list[tuple[Any, int]], LoadReport]:
    """Decode every image once, in threads; skip (and report) the ones that fail.

    Args:
        samples: the labelled files.
        max_side: shrink decoded images so their long side is at most this (memory bound).
        threads: decoding threads (PIL releases the GIL while decoding).
        on_skip: called with each failure, e.g. to print a one-line warning.
    """
    report = LoadReport()

    def one(sample: Sample) -> tuple[Any, int] | ImageLoadError:
        try:
            im = load_image(sample.path, draft_size=max_side)
        except ImageLoadError as e:
            return e
        if max_side and max(im.size) > max_side:
            im.thumbnail((max_side, max_side))
        return im, sample.label

    out: list[tuple[Any, int]] = []
    with ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1)) as pool:
        for result in pool.map(one, samples):
            if isinstance(result, ImageLoadError):
                report.skipped.append((str(result.path), result.reason))
                if on_skip:
                    on_skip(result)
            else:
                out.append(result)
    return out, report


class DecodedDataset:
    """Already-decoded (image, label) pairs, augmented on access. Yields (tensor, label)."""

    def __init__(self, items: Sequence[tuple[Any, int]], transform: Callable[[Any], Any]) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, float]:
        im, label = self.items[i]
        return self.transform(im), float(label)
