"""The training loop, one function per phase: prepare, fit one epoch, validate, keep the best,
and the resumable state.

:func:`smokerdet.training.train.train` strings these together; ``scripts/distill.py`` reuses them with
its own loss. Everything one run carries from epoch to epoch is one :class:`LoopState`, which is
also what the resumable state on disk is written from.

Validation scores the validation files exactly as ``smokerdet predict`` and ``eval`` do (the same
decoding at the model's input size, the same eval transform, the same forward pass with the
model's TTA), and the epoch kept is the one whose F1 at its own best threshold is highest. That
threshold and those metrics are what ``model.json`` stores: one validation pass picks the epoch
and calibrates it.

Under ``torchrun`` (see :mod:`smokerdet.distributed`) the model is wrapped in
DistributedDataParallel, each rank trains on its :class:`~torch.utils.data.DistributedSampler`
share of every epoch and validates a contiguous slice of the validation images; the
probabilities are gathered so that every image counts once and every rank computes the same
threshold and metrics. Only the main rank writes the model folder and the resumable state.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smokerdet import distributed
from smokerdet.data import (
    DatasetSplits,
    DecodedDataset,
    ImageFileDataset,
    Sample,
    decode_all,
    eval_transform,
    find_dataset,
    fingerprint,
    resolve_data_root,
    train_transform,
)
from smokerdet.distributed import bounds
from smokerdet.errors import ConfigError, DatasetLayoutError, Interrupted
from smokerdet.inference import forward_probs
from smokerdet.metrics import BinaryMetrics, best_threshold, binary_metrics
from smokerdet.models import (
    LoadedModel,
    ModelMeta,
    check_arch,
    create_model,
    load_model,
    pretrained_provenance,
    resolve_data_config,
    save_model,
)
from smokerdet.training.resume import ResumeState, write_resume_files

if TYPE_CHECKING:
    from smokerdet.data import DataConfig
    from smokerdet.training.config import TrainConfig

log = logging.getLogger("smokerdet")

#: A loss to train with instead of BCE: ``criterion(logits, inputs, targets) -> loss``.
Criterion = Callable[[Any, Any, Any], Any]

#: Validation images per forward pass (the result does not depend on it).
VAL_BATCH_SIZE = 64


@dataclass
class EpochStats:
    """One epoch's numbers, as shown in the per-epoch table.

    The validation metrics are taken at ``val_threshold``, the threshold with the best F1 on
    validation for this epoch: the one ``model.json`` stores if the epoch is kept.
    """

    epoch: int
    phase: str
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    val_precision: float | None
    val_recall: float | None
    val_f1: float | None
    lr: float
    seconds: float
    images_per_second: float
    improved: bool
    val_threshold: float | None = None


class TrainReporter:
    """Receives progress; the default one says nothing. The CLI draws bars and tables."""

    def on_start(self, info: dict[str, Any]) -> None:
        """Called once with the model, data and device in use."""

    def on_epoch_start(self, epoch: int, total: int, steps: int, phase: str) -> None:
        """Called before each epoch with its number of steps."""

    def on_step(self, loss: float) -> None:
        """Called after each optimisation step with the batch loss."""

    def on_epoch_end(self, stats: EpochStats) -> None:
        """Called after each epoch's validation."""

    def on_note(self, message: str) -> None:
        """Called with a line worth telling the user (e.g. which recipe runs)."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training; the last finished epoch is on disk."""


# ---------------------------------------------------------------------------------------------
# Building blocks: seeds, loaders, the optimisation step


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_train_workers() -> int:
    """Augmentation workers that do not compete with the model's own compute threads.

    Measured by ``bench/train.py`` on 2 cores: augmenting in the main process costs 1.17x pure
    compute per epoch, two worker processes 1.29x. Workers pay off only with spare cores.
    """
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def make_train_loader(
    items: list[tuple[Any, int]],
    data_cfg: DataConfig,
    batch_size: int,
    workers: int,
    seed: int,
    device: str,
    world: distributed.World | None = None,
) -> Any:
    """The augmenting, shuffling, seeded DataLoader over decoded training images.

    With several ranks, a DistributedSampler gives each rank its share of every epoch (the
    same permutation on every rank, from ``seed`` and the epoch set by :func:`run_epoch`);
    ``batch_size`` is then per rank.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    world = world or distributed.World()
    dataset = DecodedDataset(items, train_transform(data_cfg))
    sampler = None
    if world.distributed:
        sampler = DistributedSampler(
            dataset,  # type: ignore[arg-type]
            num_replicas=world.size,
            rank=world.rank,
            shuffle=True,
            seed=seed * 1000,
            drop_last=False,  # pads with repeats so every rank takes the same number of steps
        )
    share = len(sampler) if sampler is not None else len(items)
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=share > batch_size,
        num_workers=workers,
        persistent_workers=False,  # fresh workers each epoch, seeded from the generator
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device == "cuda",
    )


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


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as JSON-able values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


# ---------------------------------------------------------------------------------------------
# Prepare: where the weights start, the data, the state


@dataclass
class Start:
    """The model to train, its preprocessing, and where its weights came from."""

    model: Any
    data_config: DataConfig
    origin: dict[str, Any]
    arch: str


def build_start(cfg: TrainConfig) -> Start:
    """The starting model as ``cfg`` asks: an ``--init`` model, or a timm model."""
    if cfg.init is not None:
        base = load_model(cfg.init)
        if cfg.arch != base.meta.arch:
            raise ConfigError(
                f"--arch {cfg.arch} differs from the --init model's {base.meta.arch}",
                hint="leave --arch out: --init keeps the model's own architecture",
            )
        if cfg.img_size is not None and cfg.img_size != base.meta.data_config.input_size:
            raise ConfigError(
                f"--img-size {cfg.img_size} differs from the --init model's "
                f"{base.meta.data_config.input_size}",
                hint="leave --img-size out: --init keeps the model's own preprocessing",
            )
        origin = {"init": base.name, "init_path": str(base.path), "arch": base.meta.arch}
        return Start(base.model.float(), base.meta.data_config, origin, base.meta.arch)
    check_arch(cfg.arch)
    pretrained = cfg.pretrained and cfg.weights is None
    model = create_model(cfg.arch, pretrained=pretrained, weights=cfg.weights)
    origin = (
        pretrained_provenance(cfg.arch)
        if pretrained
        else {"weights": str(cfg.weights) if cfg.weights else None}
    )
    return Start(model, resolve_data_config(model, cfg.img_size), origin, cfg.arch)


@dataclass
class TrainData:
    """The training loader and the validation split as the model will see it in predict."""

    splits: DatasetSplits
    train_loader: Any
    val_x: Any | None  # [N, C, H, W], eval-transformed; None when no validation image is usable
    val_y: list[int]
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files (this rank's slice)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_loader))


def find_splits(cfg: TrainConfig) -> DatasetSplits:
    """The dataset's splits, checked to hold a trainable training split.

    Under torchrun the main rank looks and the others use its answer, so every rank trains on
    the same files (and a bad ``--data`` is reported once).
    """
    return distributed.on_main(lambda: _find_splits(cfg))


def _find_splits(cfg: TrainConfig) -> DatasetSplits:
    data_root = resolve_data_root(cfg.data)
    # Adapting head-only cross-validates inside the site's photos: no validation split needed.
    head_only = cfg.init is not None and cfg.recipe != "full"
    splits = find_dataset(data_root, seed=cfg.seed, need_val=not head_only)
    if not splits.train:
        raise DatasetLayoutError(f"no training images in {data_root}", hint="check --data")
    if len({s.label for s in splits.train}) < 2:
        raise DatasetLayoutError(
            f"the training images in {data_root} are all of one class",
            hint="a classifier needs both smoking_ and notsmoking_ examples",
        )
    return splits


def eval_tensors(
    samples: Sequence[Sample], data_cfg: DataConfig
) -> tuple[Any | None, list[int], list[tuple[str, str]]]:
    """Validation images decoded once, exactly as :func:`smokerdet.inference.batch.score_files` does.

    The same dataset class, draft size and eval transform, so a validation image's tensor is
    the one ``predict`` would feed the model. Returns (stacked tensors or None, labels,
    skipped files).
    """
    import torch

    files = ImageFileDataset(
        [s.path for s in samples], eval_transform(data_cfg), data_cfg.input_size
    )
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        items = list(pool.map(files.__getitem__, range(len(files))))
    tensors, labels, skipped = [], [], []
    for (_, tensor, error), sample in zip(items, samples, strict=True):
        if error is None:
            tensors.append(tensor)
            labels.append(sample.label)
        else:
            skipped.append((str(sample.path), error))
            log.warning("skipped %s: %s", sample.path, error)
    return (torch.stack(tensors) if tensors else None), labels, skipped


def load_data(
    cfg: TrainConfig,
    splits: DatasetSplits,
    data_cfg: DataConfig,
    device: str,
    world: distributed.World | None = None,
) -> TrainData:
    """Decode the training images once (for augmentation) and the validation images as predict
    does; unreadable files are skipped with a warning.

    Every rank decodes all training images (its sampler picks from them each epoch) and only
    its own contiguous slice of the validation images.
    """
    world = world or distributed.World()
    max_side = max(2 * data_cfg.input_size, 256)
    train_items, report = decode_all(
        splits.train, max_side=max_side, on_skip=lambda e: log.warning("skipped %s", e)
    )
    if len({label for _, label in train_items}) < 2:
        raise DatasetLayoutError(
            f"after skipping {len(report.skipped)} unreadable files, the training "
            "images do not hold both classes"
        )
    start, stop = bounds(len(splits.val), world.rank, world.size)
    val_x, val_y, val_skipped = eval_tensors(splits.val[start:stop], data_cfg)
    workers = cfg.workers if cfg.workers is not None else default_train_workers()
    loader = make_train_loader(
        train_items, data_cfg, cfg.batch_size, workers, cfg.seed, device, world
    )
    return TrainData(splits, loader, val_x, val_y, report.skipped + val_skipped)


@dataclass
class LoopState:
    """What one run carries from epoch to epoch; with the optimiser's tensors, all a resume
    needs (see :func:`write_resume_state`)."""

    cfg: TrainConfig
    folder: Path
    meta: ModelMeta  # threshold and val_metrics: those of the best epoch so far
    model: Any
    device: str
    world: distributed.World = field(default_factory=distributed.World)
    epoch: int = 0  # the last finished epoch
    best: tuple[float, float] | None = None  # (val F1, -val loss) of the kept epoch
    best_epoch: int = 0
    stale: int = 0  # fine-tuning epochs since the last improvement
    stopped_early: bool = False
    history: list[EpochStats] = field(default_factory=list)
    # The current phase's optimisation, rebuilt by start_phase:
    phase: str = ""
    optimizer: Any = None
    scheduler: Any = None
    ema: Any = None
    step: Stepper | None = None

    @property
    def scored_model(self) -> Any:
        """The weights validated and saved: the EMA's with ``--ema``."""
        return self.ema.module if self.ema is not None else self.model


def prepare(
    cfg: TrainConfig,
    folder: Path,
    device: str,
    saved: ResumeState | None = None,
    start: Start | None = None,
    world: distributed.World | None = None,
    splits: DatasetSplits | None = None,
) -> tuple[LoopState, TrainData]:
    """Seed, build or restore the model, load the data: a state ready for the first epoch.

    Args:
        cfg: the run's options.
        folder: the model folder the run writes.
        device: where to train.
        saved: a resumable state to continue from.
        start: the model to start from; default :func:`build_start` of ``cfg``.
        world: this rank's place in a torchrun run; default one process.
        splits: the photos to train and validate on, instead of those :func:`find_splits`
            finds in ``cfg.data`` (a cross-validation fold).
    """
    import torch

    world = world or distributed.World()
    splits = splits or find_splits(cfg)
    seed_everything(cfg.seed)
    if saved is not None:
        meta = ModelMeta.from_dict(saved.json["meta"], where="resume state")
        model = create_model(meta.arch)
        _load_prefixed(model, saved.tensors, "model.")
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
        train_args=config_to_dict(cfg),
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


@dataclass
class Validation:
    """One validation pass: the loss, and the metrics at the threshold with the best F1."""

    loss: float
    threshold: float
    metrics: BinaryMetrics


def as_saved(model: Any, half: bool) -> Any:
    """The model as it will load from disk: with ``--half``, weights rounded through fp16."""
    if not half:
        return model
    twin = copy.deepcopy(model)
    state = twin.state_dict()
    twin.load_state_dict({k: v.half() if v.is_floating_point() else v for k, v in state.items()})
    return twin


def score_validation(loaded: LoadedModel, x: Any, y: list[int], device: str) -> Validation:
    """Validation numbers of ``loaded`` on eval-transformed tensors ``x`` with labels ``y``.

    The forward pass is :func:`smokerdet.inference.torch_backend.forward_probs`, the one behind eval and
    predict (with the model's TTA); the threshold is picked on its probabilities.
    """
    return validation_of(y, _probs(loaded, x, device))


def _probs(loaded: LoadedModel, x: Any | None, device: str) -> list[float]:
    probs: list[float] = []
    for i in range(0, 0 if x is None else len(x), VAL_BATCH_SIZE):
        probs += forward_probs(loaded, x[i : i + VAL_BATCH_SIZE], device)
    return probs


def validation_of(y: list[int], probs: list[float]) -> Validation:
    """The loss, best-F1 threshold and metrics of probabilities ``probs`` for labels ``y``."""
    import torch

    target = torch.tensor(y, dtype=torch.float32)
    loss = torch.nn.functional.binary_cross_entropy(torch.tensor(probs), target).item()
    threshold = best_threshold(y, probs)
    return Validation(loss, threshold, binary_metrics(y, probs, threshold))


def validate(state: LoopState, data: TrainData) -> Validation | None:
    """Score the validation split with the weights that would be saved, as predict would.

    Each rank scores its slice; the slices are gathered in order, so every image counts
    exactly once and every rank computes the same numbers. None when there is no usable
    validation image.
    """
    probs: list[float] = []
    if data.val_x is not None:
        model = as_saved(state.scored_model, state.cfg.half).eval()
        meta, folder = state.meta, state.folder
        loaded = LoadedModel(model=model, meta=meta, path=folder, name=folder.name)
        probs = _probs(loaded, data.val_x, state.device)
    slices = distributed.all_gather((data.val_y, probs))
    y = [label for ys, _ in slices for label in ys]
    if not y:
        return None
    return validation_of(y, [p for _, ps in slices for p in ps])


def score_samples(
    loaded: LoadedModel, samples: Sequence[Sample], device: str = "cpu"
) -> list[tuple[str, int, float]]:
    """(path, label, probability) of each readable sample, scored as validation is."""
    x, y, skipped = eval_tensors(samples, loaded.meta.data_config)
    loaded.model.eval().to(device)
    unread = {path for path, _ in skipped}
    paths = [str(s.path) for s in samples if str(s.path) not in unread]
    return list(zip(paths, y, _probs(loaded, x, device), strict=True))


def calibrate(loaded: LoadedModel, samples: Sequence[Sample], device: str = "cpu") -> Validation:
    """Validation numbers of a model changed outside training (weight averaging, fp16).

    Store them with ``meta.threshold = v.threshold; meta.val_metrics = v.metrics.to_dict()``
    before :func:`smokerdet.models.checkpoint.save_model`.

    Raises:
        DatasetLayoutError: none of ``samples`` could be read.
    """
    x, y, _ = eval_tensors(samples, loaded.meta.data_config)
    if x is None:
        raise DatasetLayoutError(f"none of the {len(samples)} validation images could be read")
    loaded.model.eval().to(device)
    return score_validation(loaded, x, y, device)


def keep_if_best(state: LoopState, val: Validation | None) -> bool:
    """Save the validated weights, threshold and metrics if they beat the best so far.

    Best means the highest validation F1, ties broken by the lower validation loss. Only
    fine-tuning epochs count; without validation images every one of them is saved.
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
        export_saved(state.folder)
    return True


def run_epoch(state: LoopState, data: TrainData, reporter: TrainReporter) -> EpochStats:
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
    val = validate(state, data)
    improved = keep_if_best(state, val)
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
) -> None:
    """The epochs of ``phase`` not yet run, with a resumable state after each unfinished one."""
    if phase.last <= state.epoch or state.stopped_early:
        return
    start_phase(state, phase, data.steps_per_epoch, criterion)
    if saved is not None and phase.first <= saved.epoch:
        restore_phase(state, saved)
    while state.epoch < phase.last and not state.stopped_early:
        stats = run_epoch(state, data, reporter)
        done = phase.name == "finetune" and (state.epoch == phase.last or state.stopped_early)
        if not done and state.world.is_main:
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
# Resumable state: what goes into it (the file format is smokerdet.resume's)


def _cpu(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def _load_prefixed(module: Any, tensors: dict[str, Any], prefix: str) -> None:
    module.load_state_dict(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    )


def write_resume_state(state: LoopState) -> None:
    """Atomically write everything needed to continue after ``state.epoch``."""
    tensors = _cpu(state.model.state_dict(), "model.")
    if state.ema is not None:
        tensors.update(_cpu(state.ema.state_dict(), "ema."))
    opt = state.optimizer.state_dict()
    for pid, st in opt["state"].items():
        tensors.update(_cpu(st, f"opt.{pid}."))
    info = {
        "epoch": state.epoch,
        "config": config_to_dict(state.cfg),
        "meta": state.meta.to_dict(),
        "optimizer_param_groups": opt["param_groups"],
        "scheduler": {k: v for k, v in state.scheduler.state_dict().items() if k != "lr_lambdas"},
        "best": list(state.best) if state.best else None,
        "best_epoch": state.best_epoch,
        "stale": state.stale,
        "history": [asdict(h) for h in state.history],
    }
    write_resume_files(state.folder, info, tensors)


def restore_progress(state: LoopState, saved: ResumeState) -> None:
    """The epoch count, history and early-stopping record of the interrupted run."""
    state.epoch = saved.epoch
    state.history = [EpochStats(**h) for h in saved.json["history"]]
    best = saved.json["best"]
    state.best = (float(best[0]), float(best[1])) if best else None
    state.best_epoch, state.stale = saved.json["best_epoch"], saved.json["stale"]


def restore_phase(state: LoopState, saved: ResumeState) -> None:
    """The optimiser, schedule and EMA of the phase the run was interrupted in."""
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in saved.tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    state.optimizer.load_state_dict(
        {"state": opt_state, "param_groups": saved.json["optimizer_param_groups"]}
    )
    state.scheduler.load_state_dict({**saved.json["scheduler"], "lr_lambdas": [None]})
    if state.ema is not None:
        _load_prefixed(state.ema, saved.tensors, "ema.")


def export_saved(folder: Path) -> None:
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
    can say when photos look unlike them (:mod:`smokerdet.familiarity`), and keep a sample
    of their features for site adaptation (:mod:`smokerdet.rehearsal`)."""
    from smokerdet.inference import fit_for_model

    fit_for_model(
        folder,
        [s.path for s in splits.train],
        [s.path for s in splits.val],
        train_labels=[s.label for s in splits.train],
    )


def plot_curves(folder: Path, history: list[EpochStats]) -> None:
    """``curves.png`` in the model folder: loss, validation F1 and learning rate per epoch."""
    from smokerdet.plots import TRAINING_FILE, plot_training

    if history:
        plot_training(history, folder / TRAINING_FILE)
