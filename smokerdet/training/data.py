"""What a run reads: the dataset's splits, the augmenting training loader, and the validation
photos decoded once (see :mod:`smokerdet.training.validation`).

Under ``torchrun`` every rank decodes all training images (its sampler picks from them each
epoch) and only its own contiguous slice of the validation images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smokerdet import distributed
from smokerdet.data import (
    DatasetSplits,
    DecodedDataset,
    check_per_class,
    decode_all,
    find_dataset,
    resolve_data_root,
    train_transform,
)
from smokerdet.distributed import bounds
from smokerdet.errors import DatasetLayoutError
from smokerdet.training.validation import ValidationSet, decode_validation

if TYPE_CHECKING:
    from smokerdet.data import DataConfig
    from smokerdet.training.config import TrainConfig

log = logging.getLogger("smokerdet")


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
    check_per_class(splits.train, 1, purpose="to train", photos=f"training photo in {data_root}")
    return splits


@dataclass
class TrainData:
    """The training loader, and the validation photos as the model will see them in predict."""

    splits: DatasetSplits
    train_loader: Any
    val: ValidationSet  # this rank's slice
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files (this rank's share)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.train_loader))


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
    same permutation on every rank, from ``seed`` and the epoch the loop sets); ``batch_size``
    is then per rank.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    world = world or distributed.World()
    dataset = DecodedDataset(items, train_transform(data_cfg))
    sampler: Any = None
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


def load_data(
    cfg: TrainConfig,
    splits: DatasetSplits,
    data_cfg: DataConfig,
    device: str,
    world: distributed.World | None = None,
) -> TrainData:
    """Decode the training images once (for augmentation) and this rank's validation images
    as predict does; unreadable files are skipped with a warning.

    Raises:
        DatasetLayoutError: the readable training images do not hold both classes.
    """
    world = world or distributed.World()
    max_side = max(2 * data_cfg.input_size, 256)
    train_items, report = decode_all(
        splits.train, max_side=max_side, on_skip=lambda e: log.warning("skipped %s", e)
    )
    unread = {path for path, _ in report.skipped}
    check_per_class(
        [s for s in splits.train if str(s.path) not in unread],
        1,
        purpose="to train",
        photos="readable training photo",
        why=f" (after skipping {len(unread)} unreadable files)",
    )
    start, stop = bounds(len(splits.val), world.rank, world.size)
    val = decode_validation(splits.val[start:stop], data_cfg)
    workers = cfg.workers if cfg.workers is not None else default_train_workers()
    loader = make_train_loader(
        train_items, data_cfg, cfg.batch_size, workers, cfg.seed, device, world
    )
    return TrainData(splits, loader, val, report.skipped + val.skipped)
