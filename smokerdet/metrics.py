"""Binary classification metrics, smoking being the positive class.

Plain Python, no NumPy: the numbers are simple, and every edge case is ours to define.
A ratio whose denominator is zero is reported as 0.0 with a note, never NaN.

Example:
    >>> m = binary_metrics([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6], threshold=0.5)
    >>> (m.tp, m.fp, m.tn, m.fn), m.accuracy
    ((1, 1, 1, 1), 0.5)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BinaryMetrics:
    """Confusion counts and the metrics derived from them."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    specificity: float
    roc_auc: float | None
    support_smoking: int
    support_not_smoking: int
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n"] = self.n
        d["confusion_matrix"] = {
            "labels": ["not_smoking", "smoking"],
            "rows_are": "true class",
            "matrix": [[self.tn, self.fp], [self.fn, self.tp]],
        }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BinaryMetrics:
        """The inverse of :meth:`to_dict` (derived keys such as ``n`` are ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _ratio(num: int, den: int, note: str, notes: list[str]) -> float:
    if den == 0:
        notes.append(note)
        return 0.0
    return num / den


def roc_auc(y_true: Sequence[int], y_score: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None for a single class."""
    n_pos = sum(1 for y in y_true if y == 1)
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(y_score)), key=lambda i: y_score[i])
    ranks = [0.0] * len(order)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and y_score[order[j + 1]] == y_score[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # average rank of a tie group, 1-based
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, y_true, strict=True) if y == 1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_metrics(
    y_true: Sequence[int], y_prob: Sequence[float], threshold: float = 0.5
) -> BinaryMetrics:
    """Metrics of probabilities ``y_prob`` against labels ``y_true`` (1 = smoking).

    An image is predicted smoking when its probability is ``>= threshold``.
    """
    if len(y_true) != len(y_prob):
        raise ValueError("y_true and y_prob differ in length")
    tp = fp = tn = fn = 0
    for y, p in zip(y_true, y_prob, strict=True):
        pred = p >= threshold
        if y == 1:
            tp, fn = (tp + 1, fn) if pred else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if pred else (fp, tn + 1)
    notes: list[str] = []
    n = tp + fp + tn + fn
    accuracy = _ratio(tp + tn, n, "no images: accuracy reported as 0", notes)
    precision = _ratio(
        tp, tp + fp, "no image was predicted smoking: precision reported as 0", notes
    )
    recall = _ratio(tp, tp + fn, "no smoking images: recall reported as 0", notes)
    specificity = _ratio(tn, tn + fp, "no not-smoking images: specificity reported as 0", notes)
    f1 = _f1(tp, fp, fn)
    auc = roc_auc(y_true, y_prob)
    if auc is None and n:
        notes.append("only one class present: ROC-AUC undefined")
    return BinaryMetrics(
        threshold=threshold,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=accuracy,
        precision=precision,
        recall=recall,
        f1=f1,
        specificity=specificity,
        roc_auc=auc,
        support_smoking=tp + fn,
        support_not_smoking=tn + fp,
        notes=notes,
    )


def _f1(tp: int, fp: int, fn: int) -> float:
    """F1 from confusion counts; 0.0 where precision and recall are both 0 or undefined."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def best_threshold(y_true: Sequence[int], y_prob: Sequence[float]) -> float:
    """The decision threshold with the best F1; among ties, the one closest to 0.5.

    Candidates are 0.5 and the midpoints between consecutive distinct probabilities, so the
    chosen threshold sits in a gap rather than on a validation probability. One sort and one
    sweep: O(n log n).
    """
    if len(y_true) != len(y_prob):
        raise ValueError("y_true and y_prob differ in length")
    values = sorted(set(y_prob))
    if not values:
        return 0.5
    pos_at: dict[float, int] = dict.fromkeys(values, 0)
    neg_at: dict[float, int] = dict.fromkeys(values, 0)
    for y, p in zip(y_true, y_prob, strict=True):
        if y == 1:
            pos_at[p] += 1
        else:
            neg_at[p] += 1
    n_pos = sum(pos_at.values())
    # Predicted smoking at threshold t: every probability >= t. Sweeping the distinct values
    # from the top, tp and fp are the positives and negatives at or above the current value.
    above: list[tuple[int, int]] = [(0, 0)] * len(values)  # (tp, fp) for p >= values[i]
    tp = fp = 0
    for i in range(len(values) - 1, -1, -1):
        tp, fp = tp + pos_at[values[i]], fp + neg_at[values[i]]
        above[i] = (tp, fp)
    thresholds = [0.5] + [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)]
    candidates = []
    for t in thresholds:
        first = bisect_left(values, t)  # the first value predicted smoking at t
        candidates.append((t, *(above[first] if first < len(values) else (0, 0))))
    # max() keeps the first of equal keys, as the candidate order above intends.
    best = max(candidates, key=lambda c: (_f1(c[1], c[2], n_pos - c[1]), -abs(c[0] - 0.5)))
    return float(best[0])
