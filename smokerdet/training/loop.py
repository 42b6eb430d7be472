"""The epoch loop every fine-tuning recipe shares: prepare a run, then per epoch fit, validate,
keep the best, and leave a resumable state.

:func:`fit` runs it for one model folder; the full recipe and cross-validation (each of its fold
models and its final model) call it, and ``scripts/distill.py`` reaches it through ``train`` with
its own loss. What a run carries from epoch to epoch is one
:class:`~smokerdet.training.state.LoopState`.

Under ``torchrun`` (see :mod:`smokerdet.distributed`) the model is wrapped in
DistributedDataParallel, each rank trains on its :class:`~torch.utils.data.DistributedSampler`
share of every epoch and validates its slice of the validation photos
(:mod:`smokerdet.training.validation`). Only the main rank writes the model folder and the
resumable state.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet import distributed
from smokerdet.data import DatasetSplits, fingerprint
from smokerdet.metrics import BinaryMetrics
from smokerdet.models import ModelMeta, create_model, save_model
from smokerdet.training.artifacts import export_onnx
from smokerdet.training.data import TrainData, load_data
from smokerdet.training.report import EpochStats, TrainingInterrupted, TrainReporter, TrainResult
from smokerdet.training.resume import (
    RESUME_DIR,
    ResumeState,
    restore_model,
    restore_phase,
    restore_progress,
    write_resume_state,
)
from smokerdet.training.start import Start, build_start
from smokerdet.training.state import LoopState
from smokerdet.training.validation import Validation, validate

if TYPE_CHECKING:
    from smokerdet.training.config import TrainConfig

#: A loss to train with instead of BCE: ``criterion(logits, inputs, targets) -> loss``.
Criterion = Callable[[Any, Any, Any], Any]


# ---------------------------------------------------------------------------------------------
# Building blocks: seeds, the optimisation step, the schedule


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Stepper:
    """One optimisation step: BCE-with-logits (optionally label-smoothed), AMP on CUDA.

    A ``criterion`` replaces BCE, e.g. a distillation loss that also looks at the inputs.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        device: str,
        label_smoothing: float = 0.0,
        criterion: Criterion | None = None,
    ):
        import torch

        self.model, self.optimizer, self.device = model, optimizer, device
        self.smooth = label_smoothing
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.criterion = criterion
        self.amp = device == "cuda"
        bf16 = self.amp and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and not bf16)

    def __call__(self, x: Any, y: Any) -> float:
        """Forward, backward and update on one batch; returns the batch loss."""
        import torch

        x = x.to(self.device, non_blocking=True)
        if self.device == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        target = y.to(self.device).float() * (1 - self.smooth) + 0.5 * self.smooth
        with torch.autocast(device_type="cuda", dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(x).float().reshape(-1)
            if self.criterion is None:
                loss = self.loss_fn(logits, target)
            else:
                loss = self.criterion(logits, x, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.item())


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warmup, then a cosine down to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def freeze_backbone(model: Any, frozen: bool) -> list[Any]:
    """Freeze or unfreeze all but the classifier; return the trainable parameters."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad = (not frozen) or id(p) in head_ids
    return [p for p in model.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------
# Prepare: the model, its meta, the data, the state


def prepare(
    cfg: TrainConfig,
    folder: Path,
    device: str,
    splits: DatasetSplits,
    saved: ResumeState | None = None,
    start: Start | None = None,
    world: distributed.World | None = None,
) -> tuple[LoopState, TrainData]:
    """Seed, build or restore the model, load the data: a state ready for the first epoch.

    Args:
        cfg: the run's options.
        folder: the model folder the run writes.
        device: where to train.
        splits: the photos to train and validate on.
        saved: a resumable state to continue from.
        start: the model to start from; default :func:`~smokerdet.training.start.build_start`
            of ``cfg``.
        world: this rank's place in a torchrun run; default one process.
    """
    import torch

    world = world or distributed.World()
    seed_everything(cfg.seed)
    if saved is not None:
        meta = ModelMeta.from_dict(saved.json["meta"], where="resume state")
        model = create_model(meta.arch)
        restore_model(model, saved)
    else:
        start = start or build_start(cfg)
        model, meta = start.model, new_meta(cfg, start, splits)
    model.to(device)
    if device == "cpu":
        model.to(memory_format=torch.channels_last)
    data = load_data(cfg, splits, meta.data_config, device, world)
    state = LoopState(cfg=cfg, folder=folder, meta=meta, model=model, device=device, world=world)
    if saved is not None:
        restore_progress(state, saved)
    return state, data


def new_meta(cfg: TrainConfig, start: Start, splits: DatasetSplits) -> ModelMeta:
    """The ``model.json`` of a fresh run, before any epoch."""
    return ModelMeta(
        arch=start.arch,
        data_config=start.data_config,
        tta="hflip" if cfg.tta else None,
        data_fingerprint={
            **fingerprint([*splits.train, *splits.val], splits.root),
            "root": str(splits.root),
        },
        seed=cfg.seed,
        train_args=cfg.to_dict(),
        provenance=start.origin,
    )


def start_info(state: LoopState, data: TrainData, resumed_from: int | None) -> dict[str, Any]:
    """What :meth:`TrainReporter.on_start` is told."""
    return {
        "name": state.folder.name,
        "arch": state.meta.arch,
        "device": state.device,
        "world_size": state.world.size,
        "data": str(data.splits.root),
        "layout": data.splits.layout,
        "counts": data.splits.counts(),
        "input_size": state.meta.data_config.input_size,
        "origin": state.meta.provenance,
        "notes": data.splits.notes,
        "skipped": len(data.skipped),
        "resumed_from": resumed_from,
    }


# ---------------------------------------------------------------------------------------------
# Phases and epochs


@dataclass(frozen=True)
class Phase:
    """A run of epochs with one optimiser: ``probe`` (backbone frozen) or ``finetune``."""

    name: str
    first: int
    last: int


def phases(cfg: TrainConfig) -> list[Phase]:
    """LP-FT: the optional linear probe, then fine-tuning; epochs are numbered across both."""
    probe = [Phase("probe", 1, cfg.lp_epochs)] if cfg.lp_epochs else []
    return [*probe, Phase("finetune", cfg.lp_epochs + 1, cfg.lp_epochs + cfg.epochs)]


def start_phase(
    state: LoopState, phase: Phase, steps_per_epoch: int, criterion: Criterion | None = None
) -> None:
    """A fresh optimiser, schedule and (when fine-tuning with ``--ema``) weight average."""
    import torch

    cfg, probe = state.cfg, phase.name == "probe"
    params = freeze_backbone(state.model, frozen=probe)
    lr = cfg.lr * 10 if probe else cfg.lr
    state.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    total = steps_per_epoch * (phase.last - phase.first + 1)
    warmup = 0 if probe else int(cfg.warmup_epochs * steps_per_epoch)
    schedule = warmup_cosine(warmup, total)
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, schedule)
    trained = _ddp(state) if state.world.distributed else state.model
    state.step = Stepper(trained, state.optimizer, state.device, cfg.label_smoothing, criterion)
    state.ema = None
    if cfg.ema and not probe:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        state.ema = AveragedModel(
            state.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True
        )
    state.phase = phase.name


def _ddp(state: LoopState) -> Any:
    """The model wrapped for data-parallel steps; built per phase, after freezing, because DDP
    synchronises exactly the parameters that need gradients when it is made."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [state.world.local_rank] if state.device.startswith("cuda") else None
    return DistributedDataParallel(state.model, device_ids=ids)


def fit_epoch(state: LoopState, loader: Any, reporter: TrainReporter) -> tuple[float, int]:
    """One pass over the training images; returns (mean loss, images seen) over all ranks."""
    assert state.step is not None, "start_phase first"
    state.model.train()
    if state.phase == "probe":
        state.model.eval()  # frozen BN statistics while only the head learns
    running, seen = 0.0, 0
    for x, y in loader:
        loss = state.step(x, y)
        state.scheduler.step()
        if state.ema is not None:
            state.ema.update_parameters(state.model)
        running += loss * len(y)
        seen += len(y)
        reporter.on_step(loss)
    running, total = distributed.all_sum([running, float(seen)])
    return running / max(1.0, total), int(total)


def keep_if_best(state: LoopState, val: Validation | None, export: bool = True) -> bool:
    """Save the validated weights, threshold and metrics if they beat the best so far.

    Best means the highest validation F1, ties broken by the lower validation loss. Only
    fine-tuning epochs count; without validation images every one of them is saved. Each save
    is exported to ONNX too, unless ``export`` is off (a temporary model).
    """
    if state.phase != "finetune":
        return False
    key = (val.metrics.f1, -val.loss) if val else (0.0, 0.0)
    if val is not None and state.best is not None and key <= state.best:
        state.stale += 1
        return False
    state.best, state.best_epoch, state.stale = key, state.epoch, 0
    state.meta.threshold = val.threshold if val else 0.5
    state.meta.val_metrics = val.metrics.to_dict() if val else {}
    if state.world.is_main:
        save_model(state.folder, state.scored_model, state.meta, half=state.cfg.half)
        if export:
            export_onnx(state.folder)
    return True


def run_epoch(
    state: LoopState, data: TrainData, reporter: TrainReporter, export: bool = True
) -> EpochStats:
    """Fit, validate and keep-if-best one epoch; returns its numbers."""
    cfg, epoch = state.cfg, state.epoch + 1
    # Each epoch's randomness is a function of (seed, epoch) alone, so a resumed run replays
    # exactly what an uninterrupted one would have done.
    # Ranks draw different augmentations; rank 0 draws what a single process would.
    seed_everything(cfg.seed * 1000 + epoch + 1_000_003 * state.world.rank)
    data.train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)
    if state.world.distributed:
        data.train_loader.sampler.set_epoch(epoch)  # its permutation: seed * 1000 + epoch
    total = cfg.lp_epochs + cfg.epochs
    reporter.on_epoch_start(epoch, total, data.steps_per_epoch, state.phase)
    t0 = time.perf_counter()
    train_loss, seen = fit_epoch(state, data.train_loader, reporter)
    train_seconds = time.perf_counter() - t0
    state.epoch = epoch
    val = validate(state.scored_model, state.meta, state.folder, state.device, cfg.half, data.val)
    improved = keep_if_best(state, val, export)
    m = val.metrics if val else None
    stats = EpochStats(
        epoch=epoch,
        phase=state.phase,
        train_loss=train_loss,
        val_loss=val.loss if val else None,
        val_accuracy=m.accuracy if m else None,
        val_precision=m.precision if m else None,
        val_recall=m.recall if m else None,
        val_f1=m.f1 if m else None,
        lr=state.optimizer.param_groups[0]["lr"],
        seconds=time.perf_counter() - t0,
        images_per_second=seen / train_seconds if train_seconds > 0 else 0.0,
        improved=improved,
        val_threshold=val.threshold if val else None,
    )
    state.history.append(stats)
    if state.phase == "finetune" and cfg.patience and state.stale >= cfg.patience:
        state.stopped_early = True
    return stats


def run_phase(
    state: LoopState,
    phase: Phase,
    data: TrainData,
    reporter: TrainReporter,
    saved: ResumeState | None = None,
    criterion: Criterion | None = None,
    export: bool = True,
) -> None:
    """The epochs of ``phase`` not yet run, each followed by a resumable state."""
    if phase.last <= state.epoch or state.stopped_early:
        return
    start_phase(state, phase, data.steps_per_epoch, criterion)
    if saved is not None and phase.first <= saved.epoch:
        restore_phase(state, saved)
    while state.epoch < phase.last and not state.stopped_early:
        stats = run_epoch(state, data, reporter, export)
        if state.world.is_main:
            write_resume_state(state)
        reporter.on_epoch_end(stats)


def interrupted(state: LoopState) -> TrainingInterrupted:
    """The error for Ctrl-C: what is kept on disk, and how to go on."""
    name = state.folder.name
    kept = state.history[-1].epoch if state.history else 0
    saved = f"epochs 1-{kept} are saved (best: epoch {state.best_epoch})"
    return TrainingInterrupted(
        f"training of {name} interrupted during epoch {kept + 1}; "
        + (saved if kept else "no epoch had finished"),
        hint=f"resume with: smokerdet train --resume {name}"
        if kept
        else "start again with the same command",
    )


# ---------------------------------------------------------------------------------------------
# A whole run


@dataclass
class Fitted:
    """A finished run of the loop: its last state and what it read."""

    state: LoopState
    data: TrainData
    skipped: list[tuple[str, str]]  # every rank's unreadable training and validation files

    def result(self, started: float) -> TrainResult:
        """The run as a :class:`~smokerdet.training.report.TrainResult`, ``started`` at that
        ``time.perf_counter()``."""
        state, metrics = self.state, self.state.meta.val_metrics
        return TrainResult(
            name=state.folder.name,
            path=state.folder,
            arch=state.meta.arch,
            best_epoch=state.best_epoch,
            epochs_run=state.epoch,
            stopped_early=state.stopped_early,
            threshold=state.meta.threshold,
            val_metrics=BinaryMetrics.from_dict(metrics) if metrics else None,
            history=state.history,
            counts=self.data.splits.counts(),
            skipped=self.skipped,
            seconds=time.perf_counter() - started,
        )


def fit(
    cfg: TrainConfig,
    folder: Path,
    splits: DatasetSplits,
    reporter: TrainReporter,
    *,
    device: str,
    saved: ResumeState | None = None,
    start: Start | None = None,
    criterion: Criterion | None = None,
    export: bool = True,
) -> Fitted:
    """Train the model of ``cfg`` into ``folder`` (claimed by the caller), every epoch of it.

    Call it inside :func:`smokerdet.distributed.session`. The resumable state stays in the
    folder: the caller removes it (:func:`end_run`) once the folder holds all it should.

    Args:
        cfg: the run's options.
        folder: the model folder; the best epoch's weights are saved there.
        splits: the photos to train and validate on (an empty ``val`` saves every epoch).
        reporter: receives progress.
        device: where to train (resolved).
        saved: the resumable state of an interrupted run of ``cfg`` to continue.
        start: the model to start from, instead of the one ``cfg`` describes.
        criterion: a loss to use instead of BCE.
        export: write the ONNX twin with each save (off for temporary models).

    Raises:
        TrainingInterrupted: Ctrl-C; the last finished epoch is kept and can be resumed.
        DistributedError: another rank died or hung.
    """
    world = distributed.current()
    state, data = prepare(cfg, folder, device, splits, saved, start, world)
    reporter.on_start(start_info(state, data, saved.epoch if saved else None))
    if saved is None and world.is_main:  # --overwrite: an old run's state goes now
        shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)
    try:
        for phase in phases(cfg):
            run_phase(state, phase, data, reporter, saved, criterion, export)
    except KeyboardInterrupt:
        raise interrupted(state) from None
    except RuntimeError as e:  # a collective failed: another rank died or hung
        if not world.distributed:
            raise
        stop = interrupted(state)
        lost = distributed.lost_ranks(world, e, f"; {stop.message.split('; ', 1)[1]}")
        lost.hint = f"{stop.hint}; {lost.hint}"
        raise lost from None
    skipped = [s for part in distributed.all_gather(data.skipped) for s in part]
    return Fitted(state, data, list(dict.fromkeys(skipped)))  # training files: every rank's


def end_run(folder: Path) -> None:
    """Remove the resumable state: from now on the run counts as finished."""
    if distributed.current().is_main:
        shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)
