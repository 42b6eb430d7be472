"""How long to wait before trying again: capped exponential backoff with jitter.

Streams reconnect and webhooks retry with it. The jitter spreads out many watchers that lost
the same camera at once, so they do not all knock again at the same moment.

Example:
    >>> b = Backoff(first=1.0, factor=2.0, cap=30.0, jitter=0.0)
    >>> [b.delay(n) for n in range(7)]
    [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays ``first * factor**attempt``, at most ``cap``, each scaled by up to ``±jitter``."""

    first: float = 1.0
    """Seconds before the first retry."""
    factor: float = 2.0
    """Growth from one retry to the next."""
    cap: float = 30.0
    """Longest wait, in seconds, jitter included."""
    jitter: float = 0.25
    """Relative random spread: 0.25 waits between 75% and 125% of the delay (then capped)."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        base = min(self.cap, self.first * self.factor ** min(attempt, 64))
        spread = 1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0)
        return min(self.cap, base * spread)
