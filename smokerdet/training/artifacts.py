"""What a run writes into its model folder besides the weights: the ONNX twin (with each save),
and once the run is done the familiarity stats, the list of its training photos and
``curves.png``.

The familiarity stats go in before a run counts as finished (before its resume state is
removed): a run killed while it writes them is resumed, and the resume writes them. The ONNX
twin is then exported once more, from the folder as it is finished.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smokerdet.errors import SmokerdetError

if TYPE_CHECKING:
    from smokerdet.data import DatasetSplits
    from smokerdet.training.report import EpochStats

log = logging.getLogger("smokerdet")


def export_onnx(folder: Path) -> None:
    """Write ``model.onnx`` from the weights just saved in ``folder``, so predict needs no torch.

    The old ONNX file goes first: made from earlier weights, it would be refused as stale, while
    a folder without one predicts through torch. An architecture that cannot be exported
    leaves it so, with one warning.
    """
    from smokerdet.models import ONNX_FILE, ExportError, export_onnx

    (folder / ONNX_FILE).unlink(missing_ok=True)
    try:
        export_onnx(folder)
    except ExportError as e:
        log.warning("no %s for %s (%s): it predicts through torch", ONNX_FILE, folder.name, e)


def fit_familiarity(folder: Path, splits: DatasetSplits) -> None:
    """Describe the training photos in feature space beside the saved model, so that predict
    can say when photos look unlike them (:mod:`smokerdet.inference.familiarity`), and keep a
    sample of their features for site adaptation (:mod:`smokerdet.models.rehearsal`)."""
    from smokerdet.inference import fit_for_model

    fit_for_model(
        folder,
        [s.path for s in splits.train],
        [s.path for s in splits.val],
        train_labels=[s.label for s in splits.train],
    )


def fit_familiarity_on_features(folder: Path, features: np.ndarray, weights_sha256: str) -> None:
    """Describe already-pooled features ``(N, C)`` of this model: every other row fits, the
    rest calibrates the cut; too few rows for two halves fit and calibrate on all of them."""
    from smokerdet.inference import familiarity

    fitted, held = features, None
    if len(features) >= 2 * familiarity.MIN_PHOTOS:
        order = np.random.default_rng(0).permutation(len(features))
        fitted, held = features[order[::2]], features[order[1::2]]
    try:
        stats = familiarity.fit(fitted, held, weights_sha256=weights_sha256)
    except ValueError as e:  # too few photos for the stats
        log.warning("%s has no familiarity stats: %s", folder.name, e)
        return
    familiarity.save(stats, folder)


def record_training_photos(
    folder: Path, photos: dict[str, list[Path]], init: Path | None = None
) -> None:
    """``training_photos.json`` in the model folder (:mod:`smokerdet.models.training_photos`):
    the photos of each role, plus the ``--init`` model's own as ``init``, so that ``eval``
    recognises them. Written on the finished folder, so a resumed run writes it too."""
    from smokerdet.models import read_meta
    from smokerdet.models import training_photos as tp

    inherited = None
    if init is not None:
        try:
            inherited = tp.load(init, read_meta(init).data_fingerprint.get("sha256"))
        except (OSError, ValueError, SmokerdetError):  # the init model is gone or broken
            inherited = None
    sha = read_meta(folder).data_fingerprint.get("sha256", "")
    tp.save(folder, tp.TrainingPhotos.record(sha, photos, inherited))


def plot_curves(folder: Path, history: list[EpochStats]) -> None:
    """``curves.png`` in the model folder: loss, validation F1 and learning rate per epoch."""
    from smokerdet.plots import TRAINING_FILE, plot_training

    if history:
        plot_training(history, folder / TRAINING_FILE)


def finish(folder: Path, splits: DatasetSplits, history: list[EpochStats]) -> None:
    """What a fine-tuned model gets once its last epoch is saved and its ``model.json`` is
    final: the familiarity stats of its training photos, the list of those photos, the ONNX
    twin of the finished folder, and its training curves."""
    from smokerdet.models import read_meta

    fit_familiarity(folder, splits)
    init = read_meta(folder).provenance.get("init_path")
    record_training_photos(
        folder,
        {"fit": [s.path for s in splits.train], "val": [s.path for s in splits.val]},
        Path(init) if init else None,
    )
    export_onnx(folder)
    plot_curves(folder, history)
