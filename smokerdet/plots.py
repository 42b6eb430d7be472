"""Pictures of an evaluation and of a training run, as PNG files.

matplotlib is imported only when a plot is drawn, with its non-interactive Agg backend, so
importing smokerdet (or running it on a server without a display) never needs it.

Example:
    >>> from smokerdet.plots import plot_eval
    >>> plot_eval([0, 1, 1], [0.2, 0.7, 0.4], 0.5, "plots/", "my-model on val")  # doctest: +SKIP
    [PosixPath('plots/confusion.png'), PosixPath('plots/roc.png'), ...]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smokerdet._io import atomic_write_bytes
from smokerdet.metrics import binary_metrics, roc_auc

#: Size of every figure, in inches, and its resolution: 6.4 x 4.8 in at 100 dpi = 640 x 480 px.
FIGSIZE = (6.4, 4.8)
DPI = 100
EVAL_FILES = ("confusion.png", "roc.png", "precision_recall.png", "scores.png")
TRAINING_FILE = "curves.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Render ``fig`` to PNG and write it atomically (a reader never sees half a file)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _curve_points(
    y_true: Sequence[int], y_prob: Sequence[float]
) -> list[tuple[float, float, float, float]]:
    """(threshold, false positive rate, recall, precision) at every distinct score, high first."""
    pos = sum(y_true)
    neg = len(y_true) - pos
    pairs = sorted(zip(y_prob, y_true, strict=True), reverse=True)
    points: list[tuple[float, float, float, float]] = [(1.0 + 1e-9, 0.0, 0.0, 1.0)]
    tp = fp = 0
    for i, (p, y) in enumerate(pairs):
        tp += y
        fp += 1 - y
        if i + 1 < len(pairs) and pairs[i + 1][0] == p:
            continue  # ties move together: one point per distinct score
        points.append((p, fp / neg if neg else 0.0, tp / pos if pos else 0.0, tp / (tp + fp)))
    return points


def _confusion(ax: Any, y_true: Sequence[int], y_prob: Sequence[float], threshold: float) -> None:
    m = binary_metrics(y_true, y_prob, threshold)
    cells = [[m.tn, m.fp], [m.fn, m.tp]]
    ax.imshow(cells, cmap="Blues")
    top = max(max(row) for row in cells) or 1
    for r, row in enumerate(cells):
        for c, value in enumerate(row):
            color = "white" if value > top / 2 else "black"
            ax.text(c, r, str(value), ha="center", va="center", color=color, fontsize=16)
    ax.set_xticks([0, 1], ["not_smoking", "smoking"])
    ax.set_yticks([0, 1], ["not_smoking", "smoking"])
    ax.set_xlabel(f"predicted (threshold {threshold:.3f})")
    ax.set_ylabel("true")


def _roc(
    ax: Any, points: list[tuple[float, float, float, float]], threshold: float, auc: float | None
) -> None:
    area = f"AUC {auc:.3f}" if auc is not None else "AUC undefined: one class only"
    ax.plot([p[1] for p in points], [p[2] for p in points], color="C0", label=f"ROC ({area})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    at = min(points, key=lambda p: (p[0] < threshold, p[0]))  # the point the threshold uses
    ax.plot(at[1], at[2], "o", color="C3", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("recall (true positive rate)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="lower right")


def _pr(ax: Any, points: list[tuple[float, float, float, float]], threshold: float) -> None:
    ax.plot([p[2] for p in points], [p[3] for p in points], color="C0", label="precision-recall")
    at = min(points, key=lambda p: (p[0] < threshold, p[0]))
    ax.plot(at[2], at[3], "o", color="C3", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    # Below the axes: inside, every corner is where some curve goes (lower left when the
    # top-scored photo is negative, upper right for a good model).
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)


def _scores(ax: Any, y_true: Sequence[int], y_prob: Sequence[float], threshold: float) -> None:
    bins = [i / 20 for i in range(21)]
    for label, name, color in ((0, "not_smoking", "C0"), (1, "smoking", "C1")):
        values = [p for p, y in zip(y_prob, y_true, strict=True) if y == label]
        ax.hist(values, bins=bins, alpha=0.6, color=color, label=f"{name} ({len(values)})")
    ax.axvline(threshold, color="C3", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("probability of smoking")
    ax.set_ylabel("images")
    ax.set_xlim(0, 1)
    ax.legend(loc="best")


def plot_eval(
    y_true: Sequence[int],
    y_prob: Sequence[float],
    threshold: float,
    out_dir: str | os.PathLike[str],
    title: str,
) -> list[Path]:
    """Write a confusion matrix, ROC and precision-recall curves, and a score histogram.

    The threshold is marked on each. Every file is a 640 x 480 PNG, written atomically.

    Args:
        y_true: true labels, 1 for smoking.
        y_prob: probabilities of smoking, one per label.
        threshold: the decision threshold the labels were given with.
        out_dir: folder for the PNG files (created).
        title: shown on top of each figure, e.g. the model and the data.

    Returns:
        The paths written, in the order of :data:`EVAL_FILES`.
    """
    if len(y_true) != len(y_prob):
        raise ValueError(f"{len(y_true)} labels but {len(y_prob)} probabilities")
    plt = _pyplot()
    folder = Path(out_dir)
    points = _curve_points(y_true, y_prob)
    drawers = (
        lambda ax: _confusion(ax, y_true, y_prob, threshold),
        lambda ax: _roc(ax, points, threshold, roc_auc(y_true, y_prob)),
        lambda ax: _pr(ax, points, threshold),
        lambda ax: _scores(ax, y_true, y_prob, threshold),
    )
    written = []
    for name, draw in zip(EVAL_FILES, drawers, strict=True):
        fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
        draw(ax)
        ax.set_title(title, fontsize=10)
        written.append(_save(fig, folder / name))
    return written


def plot_training(history: Sequence[Mapping[str, Any] | Any], path: str | os.PathLike[str]) -> Path:
    """Write the per-epoch training curves: loss, validation F1 and learning rate.

    Args:
        history: one record per epoch (``train.EpochStats`` or its dict), with ``epoch``,
            ``train_loss``, ``val_loss``, ``val_f1`` and ``lr``.
        path: the PNG file, e.g. ``curves.png`` in the model folder (written atomically).

    Returns:
        ``path``, a 640 x 960 PNG (three panels stacked).
    """
    rows = [h if isinstance(h, Mapping) else vars(h) for h in history]
    epochs = [r["epoch"] for r in rows]
    plt = _pyplot()
    fig, (loss, f1, lr) = plt.subplots(
        3, 1, figsize=(FIGSIZE[0], FIGSIZE[1] * 2), sharex=True, layout="constrained"
    )
    loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="training")
    val_loss = [
        (e, r["val_loss"]) for e, r in zip(epochs, rows, strict=True) if r["val_loss"] is not None
    ]
    if val_loss:
        loss.plot(*zip(*val_loss, strict=True), "o-", label="validation")
    loss.set_ylabel("loss (BCE)")
    loss.legend()
    val_f1 = [
        (e, r["val_f1"]) for e, r in zip(epochs, rows, strict=True) if r["val_f1"] is not None
    ]
    if val_f1:
        f1.plot(*zip(*val_f1, strict=True), "o-", color="C2")
        best = max(val_f1, key=lambda t: t[1])
        f1.plot(*best, "*", color="C3", markersize=14, label=f"best: epoch {best[0]}")
        f1.legend(loc="lower right")
    f1.set_ylabel("validation F1")
    f1.set_ylim(-0.02, 1.02)
    lr.plot(epochs, [r["lr"] for r in rows], "o-", color="C4")
    lr.set_ylabel("learning rate")
    lr.set_xlabel("epoch")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    loss.set_title(f"training curves ({len(rows)} epochs)", fontsize=10)
    return _save(fig, Path(path))
