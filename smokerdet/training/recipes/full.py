"""The full recipe: fine-tune the whole model, keep the epoch with the best validation F1.

Each epoch is validated as ``predict`` would score the validation photos (TTA included), at the
threshold with the best F1; the epoch with the best such F1 (ties: lower validation loss) is
saved with that threshold and those metrics, and early stopping watches the same F1. After
every epoch a resumable state is saved (:func:`smokerdet.training.train.resume_training`); it
goes once the finished folder holds its familiarity stats, ONNX twin and curves.

Example:
    >>> from smokerdet.training import TrainConfig, train
    >>> result = train(TrainConfig(arch="resnet10t", pretrained=False, data="examples",
    ...                            epochs=1, img_size=64))  # doctest: +SKIP
    >>> result.path  # doctest: +SKIP
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

from smokerdet import distributed
from smokerdet.training import artifacts, loop
from smokerdet.training.resume import read_resume_state
from smokerdet.training.start import Start, claim, run_name

if TYPE_CHECKING:
    from smokerdet.data import DatasetSplits
    from smokerdet.training.config import TrainConfig
    from smokerdet.training.report import TrainReporter, TrainResult


def fine_tune(
    cfg: TrainConfig,
    reporter: TrainReporter,
    splits: DatasetSplits,
    *,
    device: str,
    resume: bool = False,
    start: Start | None = None,
    criterion: loop.Criterion | None = None,
) -> TrainResult:
    """Fine-tune as ``cfg`` says and save the best epoch in ``<data dir>/models/<name>/``.

    Call it inside :func:`smokerdet.distributed.session`: the main rank claims the name and
    writes the folder; every rank trains data-parallel and returns the same result.

    Args:
        cfg: the options.
        reporter: receives progress.
        splits: the photos to train and validate on.
        device: where to train (resolved).
        resume: continue the interrupted run named ``cfg.name``.
        start: the model to start from, instead of the one ``cfg`` describes.
        criterion: a loss to use instead of BCE.

    Raises:
        ConfigError: the name is taken, or another run is writing it.
        TrainingInterrupted: Ctrl-C; the last finished epoch is kept and can be resumed.
    """
    started = time.perf_counter()
    with ExitStack() as stack:
        # One rank decides (the name has a timestamp) and checks; every rank gets its answer.
        folder = distributed.on_main(
            lambda: claim(run_name(cfg), stack, overwrite=cfg.overwrite, resume=resume)
        )
        saved = read_resume_state(folder) if resume else None
        run = loop.fit(
            cfg,
            folder,
            splits,
            reporter,
            device=device,
            saved=saved,
            start=start,
            criterion=criterion,
        )
        if distributed.current().is_main:
            artifacts.finish(folder, splits, run.state.history)
        loop.end_run(folder)
    return run.result(started)
