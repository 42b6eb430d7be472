"""Experiment tracking: ``smokerdet train --track mlflow|tensorboard``.

:func:`track_run` wraps the reporter that shows progress in one that also logs to a tracker,
so the training loop knows nothing of it. What is logged: the config, each epoch's losses,
validation metrics, threshold and learning rate (step = epoch), the training curves, the
model's own figures, the cross-validation table of a ``--cv`` run (each fold a nested run), and
the model folder. A run that fails or is interrupted is closed as such.

Where it goes:

* MLflow: ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` when set (a server, a
  database, a folder); otherwise a local file store in ``<data dir>/mlruns`` (experiment
  ``smokerdet``), which needs no server: ``mlflow ui --backend-store-uri <that folder>``. MLflow
  3 keeps that store only with ``MLFLOW_ALLOW_FILE_STORE=true``, set here for it alone.
* TensorBoard: event files in ``$SMOKERDET_TENSORBOARD_DIR/<model name>/``, by default
  ``<data dir>/runs/<model name>/`` (``tensorboard --logdir <data dir>/runs``); the model
  folder is copied beside them, as TensorBoard keeps no artifacts.

The trackers are optional extras, imported only when asked for (``pip install
'smokerdet[mlflow]'``, ``'smokerdet[tensorboard]'``); a missing one is a usage error before
any training starts.

Example:
    >>> from smokerdet.training import TrainConfig, train
    >>> from smokerdet.training.tracking import track_run
    >>> cfg = TrainConfig(arch="resnet10t", data="photos/")
    >>> with track_run("mlflow", None, cfg) as run:  # doctest: +SKIP
    ...     run.finish(train(cfg, run.reporter))
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from smokerdet.__about__ import __version__
from smokerdet.errors import ConfigError, Interrupted
from smokerdet.paths import data_dir
from smokerdet.training.report import EpochStats, TrainReporter

if TYPE_CHECKING:
    from smokerdet.training.config import TrainConfig
    from smokerdet.training.recipes.crossval import CVResult
    from smokerdet.training.train import TrainResult

TRACKERS = ("mlflow", "tensorboard")
TENSORBOARD_ENV = "SMOKERDET_TENSORBOARD_DIR"
EXPERIMENT = "smokerdet"
FOLD_MARK = ".cv-fold"
#: Longest parameter value logged (MLflow's limit in its older versions).
MAX_PARAM = 500
#: What each epoch logs, from :class:`~smokerdet.training.loop.EpochStats`.
_EPOCH_FIELDS = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_precision",
    "val_recall",
    "val_f1",
    "val_threshold",
    "lr",
    "images_per_second",
    "seconds",
)
_SUMMARY = ("f1", "accuracy", "precision", "recall", "roc_auc")


class Backend(Protocol):
    """One tracker's calls; ``run`` is what :meth:`start` returned."""

    def start(self, name: str, parent: Any | None) -> Any: ...
    def params(self, run: Any, params: dict[str, str]) -> None: ...
    def metrics(self, run: Any, values: dict[str, float], step: int | None) -> None: ...
    def text(self, run: Any, name: str, text: str) -> None: ...
    def file(self, run: Any, path: Path) -> None: ...
    def folder(self, run: Any, path: Path, name: str) -> None: ...
    def tags(self, run: Any, tags: dict[str, str]) -> None: ...
    def end(self, run: Any, status: str) -> None: ...
    def describe(self, run: Any) -> str: ...


def open_backend(kind: str) -> Backend:
    """The tracker ``kind``, its package imported now.

    Raises:
        ConfigError: an unknown kind, or its extra is not installed.
    """
    if kind not in TRACKERS:
        raise ConfigError(f"--track must be mlflow or tensorboard, not {kind!r}")
    return _MlflowBackend() if kind == "mlflow" else _TensorBoardBackend()


def _missing(kind: str, package: str) -> ConfigError:
    return ConfigError(
        f"--track {kind} needs {package}, which is not installed",
        hint=f"pip install 'smokerdet[{kind}]'",
    )


@dataclass
class TrackedRun:
    """The reporter to train with, and :meth:`finish` to log what the run produced."""

    reporter: TrainReporter
    backend: Backend | None = None
    config: dict[str, Any] | None = None
    main: Any = None
    child: Any = None
    finished: bool = field(default=False, init=False)

    def finish(self, result: TrainResult | CVResult) -> None:
        """Log the config, the figures, the curves, the CV table and the model; close the run."""
        if self.backend is None:
            return
        from smokerdet.training.recipes.crossval import CVResult

        final = result.final if isinstance(result, CVResult) else result
        self._end_child("FINISHED")
        run = self._main(final.name)
        # The options as the saved model ran them (a --cv final run's epochs are the folds').
        ran = json.loads((final.path / "model.json").read_text(encoding="utf-8"))["train_args"]
        if self.config is None:  # --resume: the options come from the run itself
            self.backend.params(run, _params(ran))
        self.backend.text(run, "config.json", json.dumps(ran, indent=2))
        self.backend.metrics(run, _summary(final), None)
        if isinstance(result, CVResult):
            self.backend.text(run, "cv.json", json.dumps(result.cv_metrics(), indent=2))
            self.backend.text(run, "cv.md", cv_table(result))
            self.backend.metrics(run, _cv_summary(result), None)
        curves = final.path / "curves.png"
        if curves.is_file():
            self.backend.file(run, curves)
        self.backend.folder(run, final.path, "model")
        tags = {"model": final.name, "arch": final.arch, "recipe": final.recipe}
        self.backend.tags(run, {"smokerdet.version": __version__, **tags})
        self.backend.end(run, "FINISHED")
        self.finished = True

    def fail(self, status: str) -> None:
        """Close every open run as ``FAILED`` or ``KILLED``."""
        if self.backend is None or self.finished:
            return
        self._end_child(status)
        if self.main is not None:
            self.backend.end(self.main, status)

    def _main(self, name: str) -> Any:
        if self.main is None:
            assert self.backend is not None
            self.main = self.backend.start(name, None)
            if self.config:
                self.backend.params(self.main, _params(self.config))
            self.reporter.on_note(f"Tracking: {self.backend.describe(self.main)}")
        return self.main

    def _end_child(self, status: str) -> None:
        if self.child is not None and self.backend is not None:
            self.backend.end(self.child, status)
            self.child = None


class TrackingReporter(TrainReporter):
    """Forwards every call to the reporter it wraps, and logs runs and epochs to a tracker."""

    def __init__(self, inner: TrainReporter, run: TrackedRun) -> None:
        self.inner = inner
        self.run = run

    def on_start(self, info: dict[str, Any]) -> None:
        name = str(info["name"])
        run, backend = self.run, self.run.backend
        assert backend is not None
        run._end_child("FINISHED")
        if FOLD_MARK in name:  # a --cv fold: a nested run under the whole cross-validation
            parent = run._main(name.split(FOLD_MARK)[0])
            run.child = backend.start("fold" + name.split(FOLD_MARK)[1], parent)
        elif run.main is not None:  # the final model of a --cv run
            run.child = backend.start("final", run.main)
        else:
            run._main(name)
        self.inner.on_start(info)

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        self.inner.on_epoch_start(epoch, total, steps, phase)

    def on_step(self, loss: float) -> None:
        self.inner.on_step(loss)

    def on_epoch_end(self, stats: EpochStats) -> None:
        self.inner.on_epoch_end(stats)
        current = self.run.child or self.run.main
        if current is not None and self.run.backend is not None:
            values = {k: getattr(stats, k) for k in _EPOCH_FIELDS}
            self.run.backend.metrics(current, values, stats.epoch)

    def on_note(self, message: str) -> None:
        self.inner.on_note(message)


@contextmanager
def track_run(
    kind: str | None, reporter: TrainReporter | None, config: TrainConfig | None = None
) -> Iterator[TrackedRun]:
    """Train inside this block with ``run.reporter``, then call ``run.finish(result)``.

    Args:
        kind: ``mlflow``, ``tensorboard``, or None to track nothing (``run.reporter`` is then
            ``reporter`` itself).
        reporter: what shows the progress (None: silent).
        config: the run's options, logged as parameters when its run starts (None for
            ``--resume``: the model's ``train_args`` are logged at the end).

    Raises:
        ConfigError: the tracker is unknown or its extra is missing (before anything runs).
    """
    inner = reporter or TrainReporter()
    if kind is None:
        yield TrackedRun(inner)
        return
    run = TrackedRun(inner, open_backend(kind), config.to_dict() if config else None)
    run.reporter = TrackingReporter(inner, run)
    try:
        yield run
    except (KeyboardInterrupt, Interrupted):
        run.fail("KILLED")
        raise
    except BaseException:
        run.fail("FAILED")
        raise


def cv_table(result: CVResult) -> str:
    """The cross-validation as a markdown table: one row a fold, then mean, sd and pooled."""
    head = ["fold", "train", "held out", "best epoch", *_SUMMARY]
    rows = [
        [str(f.fold), str(f.n_train), str(f.n_val), str(f.best_epoch)]
        + [_cell(getattr(f.metrics, k)) for k in _SUMMARY]
        for f in result.folds
    ]
    rows.append(["mean", "", "", "", *(_cell(result.mean.get(k)) for k in _SUMMARY)])
    rows.append(["sd", "", "", "", *(_cell(result.sd.get(k)) for k in _SUMMARY)])
    rows.append(["pooled", "", "", "", *(_cell(getattr(result.pooled, k)) for k in _SUMMARY)])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return (
        "\n".join(lines) + f"\n\nthreshold {result.threshold:.4f}, final epochs {result.epochs}\n"
    )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _params(config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v)[:MAX_PARAM] for k, v in config.items()}


def _summary(result: TrainResult) -> dict[str, float]:
    """The saved model's own figures: its epoch, threshold and validation (or site CV) metrics."""
    prefix = "site_cv" if result.recipe == "head" else "best_val"
    values: dict[str, float] = {"best_epoch": result.best_epoch, "threshold": result.threshold}
    if result.val_metrics is not None:
        for k in _SUMMARY:
            if getattr(result.val_metrics, k) is not None:
                values[f"{prefix}_{k}"] = float(getattr(result.val_metrics, k))
    return values


def _cv_summary(result: CVResult) -> dict[str, float]:
    values: dict[str, float] = {}
    for k in _SUMMARY:
        found = {"mean": result.mean.get(k), "sd": result.sd.get(k)}
        found["pooled"] = getattr(result.pooled, k)
        values.update({f"cv_{name}_{k}": float(v) for name, v in found.items() if v is not None})
    return values


# ---------------------------------------------------------------------------------------------
# MLflow


class _MlflowBackend:
    def __init__(self) -> None:
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # no warning without git
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "MLflow") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            folder = data_dir() / "mlruns"
            folder.mkdir(parents=True, exist_ok=True)
            uri = folder.as_uri()
            # MLflow 3 refuses a file store unless told; this default is ours to allow.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            self.experiment = (
                found.experiment_id if found else self.client.create_experiment(experiment)
            )
        except Exception as e:  # the store refuses: a server down, a file store MLflow 3 bars
            raise ConfigError(
                f"--track mlflow: cannot use the tracking store {uri}: "
                + (str(e).splitlines() or [type(e).__name__])[0][:300],
                hint="check MLFLOW_TRACKING_URI (unset, a local store in the data dir is used); "
                "MLflow 3 keeps a file: store only with MLFLOW_ALLOW_FILE_STORE=true",
            ) from None

    def start(self, name: str, parent: Any | None) -> Any:
        tags = {"mlflow.parentRunId": parent} if parent else {}
        return self.client.create_run(self.experiment, run_name=name, tags=tags).info.run_id

    def params(self, run: Any, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run, params=[Param(k, v) for k, v in params.items()])

    def metrics(self, run: Any, values: dict[str, float], step: int | None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in values.items() if v is not None]
        self.client.log_batch(run, metrics=batch)

    def text(self, run: Any, name: str, text: str) -> None:
        self.client.log_text(run, text, name)

    def file(self, run: Any, path: Path) -> None:
        self.client.log_artifact(run, str(path))

    def folder(self, run: Any, path: Path, name: str) -> None:
        self.client.log_artifacts(run, str(path), artifact_path=name)

    def tags(self, run: Any, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run, k, v)

    def end(self, run: Any, status: str) -> None:
        self.client.set_terminated(run, status=status)

    def describe(self, run: Any) -> str:
        return f"MLflow run {run} in {self.uri}"


# ---------------------------------------------------------------------------------------------
# TensorBoard


class _TensorBoardBackend:
    def __init__(self) -> None:
        try:
            import tensorboard  # noqa: F401  (torch's writer needs it; its own error is obscure)
        except ImportError:
            raise _missing("tensorboard", "TensorBoard") from None
        override = os.environ.get(TENSORBOARD_ENV)
        self.root = Path(override).expanduser() if override else data_dir() / "runs"

    def start(self, name: str, parent: Any | None) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(parent.log_dir) / name if parent is not None else self.root / name
        return SummaryWriter(log_dir=str(folder))

    def params(self, run: Any, params: dict[str, str]) -> None:
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        run.add_text("config", "| option | value |\n|---|---|\n" + table)

    def metrics(self, run: Any, values: dict[str, float], step: int | None) -> None:
        for key, value in values.items():
            if value is not None:
                run.add_scalar(_tag(key), float(value), global_step=step)
        run.flush()

    def text(self, run: Any, name: str, text: str) -> None:
        run.add_text(Path(name).stem, text if name.endswith(".md") else f"```\n{text}\n```")

    def file(self, run: Any, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            run.add_image(path.stem, np.asarray(im.convert("RGB")), dataformats="HWC")

    def folder(self, run: Any, path: Path, name: str) -> None:
        copy = Path(run.log_dir) / name
        shutil.copytree(path, copy, dirs_exist_ok=True)
        run.add_text(name, f"the model folder, copied to {copy}")

    def tags(self, run: Any, tags: dict[str, str]) -> None:
        run.add_text("tags", "\n".join(f"- {k}: {v}" for k, v in tags.items()))

    def end(self, run: Any, status: str) -> None:
        if status != "FINISHED":
            run.add_text("status", status)
        run.close()

    def describe(self, run: Any) -> str:
        return f"TensorBoard logs in {run.log_dir} (tensorboard --logdir {self.root})"


def _tag(key: str) -> str:
    """``val_f1`` -> ``val/f1``, ``train_loss`` -> ``train/loss``: TensorBoard's groups."""
    group, _, rest = key.partition("_")
    return f"{group}/{rest}" if group in ("train", "val", "cv") and rest else key
