#!/usr/bin/env python
"""Experiment: knowledge distillation of a ResNet student from a smokerdet teacher.

No ImageNet ResNet weights can be had on the build machine, and a ResNet trained from scratch
on the 716 training photos stalls near 0.75-0.78 validation accuracy. This asks whether the
fine-tuned Lite0 teacher can carry a from-scratch ResNet further: every augmented training
batch goes through both models, and the student learns

    loss = alpha * BCE(student, sigmoid(teacher / T)) + (1 - alpha) * BCE(student, label)

The student sees exactly the teacher's tensors (same letterbox, size and normalisation), so it
is saved with the teacher's preprocessing as an ordinary smokerdet model that ``smokerdet
eval`` and ``predict`` can use. The run is ``smokerdet.training.train.train`` itself, with the student as
its start and the loss above as its criterion: the same schedule (warmup then cosine), the same
validation, best-epoch choice and threshold, the same atomic saves and Ctrl-C handling.

If the student came within 2 points of the teacher, ``smokerdet train --teacher MODEL`` would
be worth exposing; docs/model-card.md reports what was measured.

Example:
    python scripts/distill.py --teacher default --student resnet18 --epochs 8
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from smokerdet.models.build import create_model, pick_device
from smokerdet.models.registry import load_model
from smokerdet.training import EpochStats, TrainConfig, TrainReporter, TrainResult, train
from smokerdet.training.start import Start

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/smoker-detection"


class DistillLoss:
    """alpha * BCE(student, soft teacher target) + (1 - alpha) * BCE(student, label)."""

    def __init__(self, teacher: torch.nn.Module, alpha: float, temperature: float) -> None:
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.bce = torch.nn.BCEWithLogitsLoss()

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> Any:
        with torch.inference_mode():
            soft = torch.sigmoid(self.teacher(x).float().reshape(-1) / self.temperature)
        return self.alpha * self.bce(logits, soft.clone()) + (1 - self.alpha) * self.bce(
            logits, target
        )


class PrintRows(TrainReporter):
    """One row per epoch on stdout."""

    def on_epoch_end(self, s: EpochStats) -> None:
        print(f"{s.epoch:>5} {s.train_loss:>7.4f} {s.val_accuracy or 0:>6.3f} "
              f"{s.val_f1 or 0:>6.3f} {s.val_threshold or 0:>5.3f} {s.seconds:>6.1f}s"
              f"{' *' if s.improved else ''}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="default", help="smokerdet model name or path")
    parser.add_argument("--student", default="resnet18", help="timm architecture")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.7, help="weight of the teacher's term")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--name", default=None, help="model name (default: distill-STUDENT)")
    args = parser.parse_args()

    teacher = load_model(args.teacher)
    tmodel = teacher.model.float().eval().to(pick_device("auto"))
    tmodel.to(memory_format=torch.channels_last)
    data_cfg = teacher.meta.data_config
    cfg = TrainConfig(
        arch=args.student,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        pretrained=False,
        seed=args.seed,
        name=args.name or f"distill-{args.student}",
        overwrite=True,
        patience=0,
        workers=args.workers,
    )
    # Seeded, so that a rerun starts from the same random student.
    torch.manual_seed(args.seed)
    origin = {
        "distilled_from": teacher.name,
        "alpha": args.alpha,
        "temperature": args.temperature,
    }
    start = Start(create_model(args.student), data_cfg, origin, args.student)
    print(f"teacher {teacher.name} ({teacher.meta.arch} {data_cfg.input_size}px), student "
          f"{args.student} from scratch, alpha {args.alpha}, T {args.temperature}")  # fmt: skip
    print(f"{'epoch':>5} {'loss':>7} {'v_acc':>6} {'v_f1':>6} {'thr':>5} {'time':>7}")
    result = train(
        cfg, PrintRows(), start=start, criterion=DistillLoss(tmodel, args.alpha, args.temperature)
    )
    assert isinstance(result, TrainResult)  # a given start runs the full recipe
    m = result.val_metrics
    summary = f"val acc {m.accuracy:.4f} f1 {m.f1:.4f}" if m else "no validation split"
    print(f"best epoch {result.best_epoch}: {summary} at {result.threshold:.3f} -> {result.path}")


if __name__ == "__main__":
    main()
