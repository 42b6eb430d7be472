#!/usr/bin/env python
"""Experiment: knowledge distillation of a ResNet student from a smokerdet teacher.

No ImageNet ResNet weights can be had on the build machine, and a ResNet trained from scratch
on the 716 training photos stalls near 0.75-0.78 validation accuracy. This asks whether the
fine-tuned Lite0 teacher can carry a from-scratch ResNet further: every augmented training
batch goes through both models, and the student learns

    loss = alpha * BCE(student, sigmoid(teacher / T)) + (1 - alpha) * BCE(student, label)

The student sees exactly the teacher's tensors (same letterbox, size and normalisation), so it
is saved with the teacher's preprocessing as an ordinary smokerdet model that ``smokerdet
eval`` and ``predict`` can use. The epoch with the best validation F1 is kept, and its
threshold is picked on validation, as ``smokerdet train`` does.

If the student came within 2 points of the teacher, ``smokerdet train --teacher MODEL`` would
be worth exposing; docs/model-card.md reports what was measured.

Example:
    python scripts/distill.py --teacher default --student resnet18 --epochs 8
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from smokerdet.checkpoint import ModelMeta, load_model, save_model
from smokerdet.data import DecodedDataset, decode_all, eval_transform, find_dataset, fingerprint
from smokerdet.metrics import best_threshold, binary_metrics
from smokerdet.model import create_model
from smokerdet.paths import models_dir
from smokerdet.train import make_train_loader, seed_everything

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/smoker-detection"


def validate(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> tuple[list, list]:
    model.eval()
    probs: list[float] = []
    labels: list[int] = []
    with torch.inference_mode():
        for x, y in loader:
            x = x.contiguous(memory_format=torch.channels_last)
            probs += torch.sigmoid(model(x).float().reshape(-1)).tolist()
            labels += [int(v) for v in y.tolist()]
    return probs, labels


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
    parser.add_argument("--name", default=None, help="model name (default: distill-STUDENT)")
    args = parser.parse_args()

    seed_everything(args.seed)
    teacher = load_model(args.teacher)
    tmodel = teacher.model.float().eval().to(memory_format=torch.channels_last)
    cfg = teacher.meta.data_config
    student = create_model(args.student, pretrained=False).to(memory_format=torch.channels_last)

    splits = find_dataset(args.data, seed=args.seed)
    max_side = max(2 * cfg.input_size, 256)
    train_items, _ = decode_all(splits.train, max_side=max_side)
    val_items, _ = decode_all(splits.val, max_side=max_side)
    loader = make_train_loader(train_items, cfg, args.batch_size, 0, args.seed, "cpu")
    val_loader = torch.utils.data.DataLoader(
        DecodedDataset(val_items, eval_transform(cfg)),  # type: ignore[arg-type]
        batch_size=64,
    )
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.05)
    total = args.epochs * len(loader)
    warmup = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
        ),
    )
    bce = torch.nn.BCEWithLogitsLoss()
    best_f1, best_state, best_row = -1.0, None, None
    print(f"teacher {teacher.name} ({teacher.meta.arch} {cfg.input_size}px), student "
          f"{args.student} from scratch, alpha {args.alpha}, T {args.temperature}")  # fmt: skip
    print(f"{'epoch':>5} {'loss':>7} {'v_acc':>6} {'v_f1':>6} {'v_auc':>6} {'thr':>5} {'time':>7}")
    for epoch in range(1, args.epochs + 1):
        t0, losses = time.perf_counter(), []
        student.train()
        for x, y in loader:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                soft = torch.sigmoid(tmodel(x).float().reshape(-1) / args.temperature)
            logits = student(x).float().reshape(-1)
            loss = args.alpha * bce(logits, soft.clone()) + (1 - args.alpha) * bce(
                logits, y.float()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        probs, labels = validate(student, val_loader)
        thr = best_threshold(labels, probs)
        m = binary_metrics(labels, probs, thr)
        print(f"{epoch:>5} {sum(losses) / len(losses):>7.4f} {m.accuracy:>6.3f} {m.f1:>6.3f} "
              f"{m.roc_auc or 0:>6.3f} {thr:>5.3f} {time.perf_counter() - t0:>6.1f}s",
              flush=True)  # fmt: skip
        if m.f1 > best_f1:
            best_f1, best_row = m.f1, (epoch, thr, m)
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}

    assert best_state is not None and best_row is not None
    epoch, thr, m = best_row
    student.load_state_dict(best_state)
    name = args.name or f"distill-{args.student}"
    meta = ModelMeta(
        arch=args.student,
        data_config=cfg,
        threshold=thr,
        val_metrics=m.to_dict(),
        data_fingerprint={**fingerprint([*splits.train, *splits.val], splits.root)},
        seed=args.seed,
        train_args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        provenance={"distilled_from": teacher.name, "best_epoch": epoch},
    )
    out = save_model(models_dir() / name, student, meta)
    print(f"best epoch {epoch}: val acc {m.accuracy:.4f} f1 {m.f1:.4f} at {thr:.3f} -> {out}")


if __name__ == "__main__":
    main()
