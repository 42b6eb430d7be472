"""Train a timm model with one logit on a smoker dataset: BCE-with-logits, AdamW, cosine schedule.

Example:
    >>> from smokerdet.train import TrainConfig, train
    >>> result = train(TrainConfig(arch="resnet10t", pretrained=False, data="examples",
    ...                            epochs=1, img_size=64))  # doctest: +SKIP
    >>> result.path  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from smokerdet.checkpoint import (
    META_FILE,
    ModelMeta,
    atomic_write_bytes,
    atomic_write_json,
    check_name,
    load_model,
    save_model,
)
from smokerdet.config import TrainConfig
from smokerdet.data import (
    DataConfig,
    DecodedDataset,
    Sample,
    decode_all,
    eval_transform,
    find_dataset,
    fingerprint,
    resolve_data_root,
    train_transform,
)
from smokerdet.errors import CheckpointError, ConfigError, DatasetLayoutError, Interrupted
from smokerdet.inference import score_files
from smokerdet.metrics import BinaryMetrics, best_threshold, binary_metrics
from smokerdet.model import (
    DEFAULT_ARCH,
    check_arch,
    create_model,
    pick_device,
    resolve_data_config,
)
from smokerdet.paths import models_dir

log = logging.getLogger("smokerdet")


@dataclass
class EpochStats:
    """One epoch's numbers, as shown in the per-epoch table."""

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


@dataclass
class TrainResult:
    """What ``train`` produced."""

    name: str
    path: Path
    arch: str
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    threshold: float
    val_metrics: BinaryMetrics | None
    history: list[EpochStats]
    counts: dict[str, dict[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "arch": self.arch,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "threshold": self.threshold,
            "val_metrics": self.val_metrics.to_dict() if self.val_metrics else None,
            "history": [asdict(h) for h in self.history],
            "counts": self.counts,
            "skipped": [{"path": p, "error": e} for p, e in self.skipped],
            "seconds": self.seconds,
        }


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_start(cfg: TrainConfig) -> tuple[Any, DataConfig, dict[str, Any]]:
    """The model to train, its preprocessing, and where its weights came from."""
    if cfg.init is not None:
        base = load_model(cfg.init)
        if cfg.arch not in (DEFAULT_ARCH, base.meta.arch):
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
        model = base.model.float()
        origin = {"init": base.name, "init_path": str(base.path), "arch": base.meta.arch}
        return model, base.meta.data_config, origin
    check_arch(cfg.arch)
    pretrained = cfg.pretrained and cfg.weights is None
    model = create_model(cfg.arch, pretrained=pretrained, weights=cfg.weights)
    origin = {
        "weights": str(cfg.weights) if cfg.weights else ("timm-imagenet" if pretrained else None)
    }
    return model, resolve_data_config(model, cfg.img_size), origin


def _freeze_backbone(model: Any, frozen: bool) -> list[Any]:
    """Freeze or unfreeze all but the classifier; return the trainable parameters."""
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad = (not frozen) or id(p) in head_ids
    return [p for p in model.parameters() if p.requires_grad]


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
) -> Any:
    """The augmenting, shuffling, seeded DataLoader over decoded training images."""
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        DecodedDataset(items, train_transform(data_cfg)),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(items) > batch_size,
        num_workers=workers,
        persistent_workers=False,  # fresh workers each epoch, seeded from the generator
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device == "cuda",
    )


class Stepper:
    """One optimisation step: BCE-with-logits (optionally label-smoothed), AMP on CUDA."""

    def __init__(self, model: Any, optimizer: Any, device: str, label_smoothing: float = 0.0):
        import torch

        self.model, self.optimizer, self.device = model, optimizer, device
        self.smooth = label_smoothing
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
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
            loss = self.loss_fn(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.item())


def _validate(
    model: Any, loader: Any, device: str, loss_fn: Any
) -> tuple[float, list[float], list[int]]:
    import torch

    model.eval()
    total, n, probs, labels = 0.0, 0, [], []
    with torch.inference_mode():
        for x, y in loader:
            x = x.to(device)
            if device == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device).float()
            logits = model(x).float().reshape(-1)
            total += loss_fn(logits, y).item() * len(y)
            n += len(y)
            probs += torch.sigmoid(logits).tolist()
            labels += [int(v) for v in y.tolist()]
    return (total / n if n else float("nan")), probs, labels


def train(
    cfg: TrainConfig, reporter: TrainReporter | None = None, *, resume: bool = False
) -> TrainResult:
    """Train a model and save the best epoch's weights to ``<data dir>/models/<name>/``.

    Early stopping watches the validation F1 (ties broken by validation loss). After training,
    the decision threshold with the best validation F1 is stored in the checkpoint. At the end
    of every epoch a resumable state is saved next to the model (see :func:`resume_training`).

    Raises:
        DatasetNotFoundError, DatasetLayoutError: no usable data.
        UnknownArchError, WeightsError: the model can't be built as asked.
        ConfigError: options that make no sense together, or the name is taken.
        TrainingInterrupted: Ctrl-C; the last finished epoch is kept and can be resumed.
    """
    import torch
    from torch.utils.data import DataLoader

    reporter = reporter or TrainReporter()
    started = time.perf_counter()
    device = pick_device(cfg.device)
    name = cfg.name or f"{cfg.init or cfg.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    check_name(name)
    folder = models_dir() / name
    if folder.exists() and not (cfg.overwrite or resume):
        raise ConfigError(
            f"a model named {name!r} already exists at {folder}",
            hint="choose another --name, or pass --overwrite to replace it",
        )
    state = read_resume_state(folder) if resume else None

    with ModelLock(folder):
        data_root = resolve_data_root(cfg.data)
        splits = find_dataset(data_root, seed=cfg.seed)
        if not splits.train:
            raise DatasetLayoutError(f"no training images in {data_root}", hint="check --data")
        if len({s.label for s in splits.train}) < 2:
            raise DatasetLayoutError(
                f"the training images in {data_root} are all of one class",
                hint="a classifier needs both smoking_ and notsmoking_ examples",
            )

        seed_everything(cfg.seed)
        if state is not None:
            meta = ModelMeta.from_dict(state.json["meta"], where="resume state")
            model = create_model(meta.arch)
            _load_prefixed(model, state.tensors, "model.")
            data_cfg, origin, arch = meta.data_config, meta.provenance, meta.arch
        else:
            model, data_cfg, origin = _build_start(cfg)
            arch = origin.get("arch", cfg.arch)
        model.to(device)
        if device == "cpu":
            model.to(memory_format=torch.channels_last)

        max_side = max(2 * data_cfg.input_size, 256)

        def warn_skip(err: Exception) -> None:
            log.warning("skipped %s", err)

        train_items, train_report = decode_all(splits.train, max_side=max_side, on_skip=warn_skip)
        val_items, val_report = decode_all(splits.val, max_side=max_side, on_skip=warn_skip)
        skipped = train_report.skipped + val_report.skipped
        if len({label for _, label in train_items}) < 2:
            raise DatasetLayoutError(
                f"after skipping {len(train_report.skipped)} unreadable files, the training "
                "images do not hold both classes"
            )

        workers = cfg.workers if cfg.workers is not None else default_train_workers()
        train_loader = make_train_loader(
            train_items, data_cfg, cfg.batch_size, workers, cfg.seed, device
        )
        val_loader = DataLoader(
            DecodedDataset(val_items, eval_transform(data_cfg)),  # type: ignore[arg-type]
            batch_size=max(cfg.batch_size, 64),
            shuffle=False,
            num_workers=0,
        )

        reporter.on_start(
            {
                "name": name,
                "arch": arch,
                "device": device,
                "data": str(splits.root),
                "layout": splits.layout,
                "counts": splits.counts(),
                "input_size": data_cfg.input_size,
                "origin": origin,
                "notes": splits.notes,
                "skipped": len(skipped),
                "resumed_from": state.json["epoch"] if state else None,
            }
        )

        loss_fn = torch.nn.BCEWithLogitsLoss()
        if state is None:
            meta = ModelMeta(
                arch=arch,
                data_config=data_cfg,
                tta="hflip" if cfg.tta else None,
                data_fingerprint={
                    **fingerprint([*splits.train, *splits.val], splits.root),
                    "root": str(splits.root),
                },
                seed=cfg.seed,
                train_args=config_to_dict(cfg),
                provenance=origin,
            )
            if folder.exists():  # --overwrite: the old model goes only now that training starts
                shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)

        history: list[EpochStats] = []
        best: tuple[float, float] | None = None
        best_epoch, stale, stopped_early, done_epochs = 0, 0, False, 0
        if state is not None:
            history = [EpochStats(**h) for h in state.json["history"]]
            best = tuple(state.json["best"]) if state.json["best"] else None  # type: ignore[assignment]
            best_epoch, stale = state.json["best_epoch"], state.json["stale"]
            done_epochs = state.json["epoch"]

        phases = [("probe", cfg.lp_epochs)] if cfg.lp_epochs else []
        phases.append(("finetune", cfg.epochs))
        epoch = 0
        try:
            for phase, n_epochs in phases:
                first, last = epoch + 1, epoch + n_epochs
                if last <= done_epochs:
                    epoch = last
                    continue
                params = _freeze_backbone(model, frozen=phase == "probe")
                lr = cfg.lr * 10 if phase == "probe" else cfg.lr
                optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
                steps_per_epoch = max(1, len(train_loader))
                total_steps = steps_per_epoch * n_epochs
                warmup = int(cfg.warmup_epochs * steps_per_epoch) if phase == "finetune" else 0

                def schedule(
                    step: int, warmup: int = warmup, total_steps: int = total_steps
                ) -> float:
                    if step < warmup:
                        return (step + 1) / warmup
                    progress = (step - warmup) / max(1, total_steps - warmup)
                    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

                scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
                step = Stepper(model, optimizer, device, cfg.label_smoothing)
                ema = None
                if cfg.ema and phase == "finetune":
                    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

                    ema = AveragedModel(
                        model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True
                    )
                if state is not None and first <= done_epochs:
                    _restore_phase(state, optimizer, scheduler, ema)
                    epoch = done_epochs
                else:
                    epoch = first - 1
                while epoch < last:
                    epoch += 1
                    # Each epoch's randomness is a function of (seed, epoch) alone, so a
                    # resumed run replays exactly what an uninterrupted one would have done.
                    seed_everything(cfg.seed * 1000 + epoch)
                    train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)
                    reporter.on_epoch_start(
                        epoch, cfg.lp_epochs + cfg.epochs, steps_per_epoch, phase
                    )
                    model.train()
                    if phase == "probe":
                        model.eval()  # frozen BN statistics while only the head learns
                    t0 = time.perf_counter()
                    running, seen = 0.0, 0
                    for x, y in train_loader:
                        loss = step(x, y)
                        scheduler.step()
                        if ema is not None:
                            ema.update_parameters(model)
                        running += loss * len(y)
                        seen += len(y)
                        reporter.on_step(loss)
                    train_seconds = time.perf_counter() - t0
                    train_loss = running / max(1, seen)

                    # With --ema, the averaged weights are the ones validated and saved.
                    scored_model = ema.module if ema is not None else model
                    if val_items:
                        val_loss, probs, labels = _validate(
                            scored_model, val_loader, device, loss_fn
                        )
                        m = binary_metrics(labels, probs, 0.5)
                        key = (m.f1, -val_loss)
                        improved = phase == "finetune" and (best is None or key > best)
                    else:
                        val_loss, m, improved = None, None, phase == "finetune"
                        key = (0.0, 0.0)
                    if improved:
                        best, best_epoch, stale = key, epoch, 0
                        meta.val_metrics = m.to_dict() if m else {}
                        save_model(folder, scored_model, meta, half=cfg.half)
                    elif phase == "finetune":
                        stale += 1
                    stats = EpochStats(
                        epoch=epoch,
                        phase=phase,
                        train_loss=train_loss,
                        val_loss=val_loss,
                        val_accuracy=m.accuracy if m else None,
                        val_precision=m.precision if m else None,
                        val_recall=m.recall if m else None,
                        val_f1=m.f1 if m else None,
                        lr=optimizer.param_groups[0]["lr"],
                        seconds=time.perf_counter() - t0,
                        images_per_second=seen / train_seconds if train_seconds > 0 else 0.0,
                        improved=improved,
                    )
                    history.append(stats)
                    finished = phase == "finetune" and (
                        epoch == last or (cfg.patience and stale >= cfg.patience)
                    )
                    if not finished:
                        write_resume_state(
                            folder,
                            cfg=cfg,
                            meta=meta,
                            model=model,
                            optimizer=optimizer,
                            scheduler=scheduler,
                            ema=ema,
                            epoch=epoch,
                            best=best,
                            best_epoch=best_epoch,
                            stale=stale,
                            history=history,
                        )
                    reporter.on_epoch_end(stats)
                    if phase == "finetune" and cfg.patience and stale >= cfg.patience:
                        stopped_early = True
                        break
                if stopped_early:
                    break
        except KeyboardInterrupt:
            kept = history[-1].epoch if history else 0
            raise TrainingInterrupted(
                f"training of {name} interrupted during epoch {kept + 1}; "
                + (
                    f"epochs 1-{kept} are saved (best: epoch {best_epoch})"
                    if kept
                    else "no epoch had finished"
                ),
                hint=f"resume with: smokerdet train --resume {name}"
                if kept
                else "start again with the same command",
            ) from None

        threshold, val_metrics = 0.5, None
        if splits.val:
            threshold, val_metrics = calibrate_threshold(folder, splits.val, device)
        shutil.rmtree(folder / RESUME_DIR, ignore_errors=True)

    return TrainResult(
        name=name,
        path=folder,
        arch=arch,
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped_early,
        threshold=threshold,
        val_metrics=val_metrics,
        history=history,
        counts=splits.counts(),
        skipped=skipped,
        seconds=time.perf_counter() - started,
    )


def calibrate_threshold(
    folder: Path, val: list[Sample], device: str = "cpu"
) -> tuple[float, BinaryMetrics]:
    """Store in ``folder``'s model.json the threshold with the best F1 on ``val``.

    The threshold is picked on exactly what eval and predict will compute: the saved model,
    reloaded, scoring the files through the same pipeline.
    """
    loaded = load_model(folder, device=device)
    scored = list(score_files(loaded, [s.path for s in val], device=device, workers=0))
    ok = [(s, sc) for s, sc in zip(val, scored, strict=True) if sc.probability is not None]
    labels = [s.label for s, _ in ok]
    probs = [sc.probability for _, sc in ok if sc.probability is not None]
    threshold = best_threshold(labels, probs)
    metrics = binary_metrics(labels, probs, threshold)
    meta = loaded.meta
    meta.threshold = threshold
    meta.val_metrics = metrics.to_dict()
    atomic_write_json(folder / META_FILE, meta.to_dict())
    return threshold, metrics


def resume_training(name: str, reporter: TrainReporter | None = None) -> TrainResult:
    """Continue an interrupted ``train`` run from its last finished epoch.

    Restores the model, optimizer, scheduler, EMA and early-stopping state, and replays the
    remaining epochs with the same per-epoch random seeds, so the result equals an
    uninterrupted run's.

    Raises:
        ModelNotFoundError: no model of that name, or it has nothing to resume.
    """
    check_name(name)
    state = read_resume_state(models_dir() / name)
    cfg = TrainConfig(**{**state.json["config"], "name": name})
    return train(cfg, reporter, resume=True)


# ---------------------------------------------------------------------------------------------
# Resumable state: safetensors for the tensors, JSON for the rest; no pickle.

RESUME_DIR = "resume"


class TrainingInterrupted(Interrupted):
    """Ctrl-C during training; the last finished epoch is on disk."""


@dataclass
class ResumeState:
    json: dict[str, Any]
    tensors: dict[str, Any]


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as JSON-able values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def _load_prefixed(module: Any, tensors: dict[str, Any], prefix: str) -> None:
    module.load_state_dict(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    )


def write_resume_state(
    folder: Path,
    *,
    cfg: TrainConfig,
    meta: ModelMeta,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    ema: Any,
    epoch: int,
    best: tuple[float, float] | None,
    best_epoch: int,
    stale: int,
    history: list[EpochStats],
) -> None:
    """Atomically write everything needed to continue after ``epoch``."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(
            {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        )
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
    blob = save(tensors)
    tensors_file = f"state-{epoch:04d}.safetensors"
    info = {
        "format_version": 1,
        "epoch": epoch,
        "config": config_to_dict(cfg),
        "meta": meta.to_dict(),
        "optimizer_param_groups": opt["param_groups"],
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "best": list(best) if best else None,
        "best_epoch": best_epoch,
        "stale": stale,
        "history": [asdict(h) for h in history],
        "tensors_file": tensors_file,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
    }
    # New tensors under a new name, then the JSON that points at them, then the old tensors
    # go: whenever a kill lands, state.json names a complete file.
    target = folder / RESUME_DIR
    try:
        atomic_write_bytes(target / tensors_file, blob)
        atomic_write_json(target / "state.json", info)
    except OSError as e:
        raise CheckpointError(
            f"cannot save the resumable state to {target}: {e.strerror or e}; the previous "
            "epoch's state is kept",
            hint="free some disk space or check permissions",
        ) from None
    for old in target.glob("state-*.safetensors"):
        if old.name != tensors_file:
            old.unlink(missing_ok=True)


def read_resume_state(folder: Path) -> ResumeState:
    """Read and check a resumable state; the JSON names the tensors file's SHA-256."""
    from safetensors.torch import load

    from smokerdet.errors import ModelNotFoundError

    path = folder / RESUME_DIR / "state.json"
    if not path.is_file():
        done = (folder / META_FILE).is_file()
        raise ModelNotFoundError(
            f"nothing to resume for {folder.name!r}"
            + (": its training finished" if done else ": no such interrupted run"),
            hint="list models with `smokerdet info`",
        )
    try:
        info = json.loads(path.read_text())
        name = str(info.get("tensors_file", ""))
        if not re.fullmatch(r"state-\d{4}\.safetensors", name):
            raise ValueError(f"bad tensors_file {name!r}")
        blob = (folder / RESUME_DIR / name).read_bytes()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"resume state of {folder.name!r} is unreadable ({e})") from None
    if hashlib.sha256(blob).hexdigest() != info.get("tensors_sha256"):
        raise CheckpointError(
            f"resume state of {folder.name!r} is torn (tensors do not match state.json)"
        )
    return ResumeState(json=info, tensors=load(blob))


def _restore_phase(state: ResumeState, optimizer: Any, scheduler: Any, ema: Any) -> None:
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in state.tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict(
        {"state": opt_state, "param_groups": state.json["optimizer_param_groups"]}
    )
    scheduler.load_state_dict({**state.json["scheduler"], "lr_lambdas": [None]})
    if ema is not None:
        _load_prefixed(ema, state.tensors, "ema.")


class ModelLock:
    """An exclusive lock on a model folder for one training run.

    The lock file holds the owner's PID; a lock whose process is gone (a crash, SIGKILL) is
    taken over instead of blocking forever.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder.parent / f".{folder.name}.lock"
        self.held = False

    def __enter__(self) -> ModelLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _lock_owner(self.path)
                if pid is not None and _alive(pid):
                    raise ConfigError(
                        f"another training run (pid {pid}) is writing model "
                        f"{self.path.name[1:-5]!r}",
                        hint="wait for it to finish, or choose another --name",
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its owner died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return self
        raise ConfigError(f"could not lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "x")
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
