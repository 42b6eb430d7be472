#!/usr/bin/env python
"""Site adaptation curve: accuracy against the number of a site's labelled photos.

A simulated site: a base model that never saw the extra sources adapts to them (people
smoking from ``extra/somking``, hand gestures from ``extra/hagrid``, both at one look). For
each N, N/2 photos of each are drawn (repeated with different draws), the head recipe of
:mod:`smokerdet.adapt` runs on them exactly as ``train --init`` does (same functions: the
head fit with rehearsal and pull at the recipe's threshold, with the best-F1 threshold picked
by K-fold CV inside the N photos scored alongside for comparison), and the
adapted head is scored on a fixed held-out set of the site (200 + 200 photos) and on the
Smoker Detection validation photos (does it forget?).

``--full N...`` also fine-tunes the whole model (``train --init BASE --recipe full``) on
the same draws, for comparison; that costs minutes per cell.

Caveat: each extra source holds one class, so a site made of them can be told apart by
source as well as by smoking; the held-out accuracy flatters any recipe. The Smoker
Detection column cannot be flattered that way.

Example:
    python bench/adapt.py --base build/base-sd-only --json bench/results/adapt.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from sources import looked  # noqa: E402

from smokerdet.data.layout import Sample, find_dataset  # noqa: E402
from smokerdet.inference.backend import open_engine  # noqa: E402
from smokerdet.inference.familiarity import pooled_features  # noqa: E402
from smokerdet.metrics import best_threshold, binary_metrics  # noqa: E402
from smokerdet.models import rehearsal  # noqa: E402
from smokerdet.models.checkpoint import read_meta  # noqa: E402
from smokerdet.training.recipes import head as adapt  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
HELD_OUT = 200  # per class (a quarter of the photos with --limit)


def start_head(base: Path) -> adapt.HeadFit:
    from smokerdet.models.registry import load_model

    c = load_model(base).model.get_classifier()
    return adapt.HeadFit(c.weight.detach().double().numpy().ravel(), float(c.bias.detach()[0]))


def score(head: adapt.HeadFit, x: np.ndarray, y: np.ndarray, t: float) -> dict[str, float]:
    m = binary_metrics(list(y), list(head.probs(x)), t)
    return {"accuracy": m.accuracy, "f1": m.f1, "roc_auc": m.roc_auc,
            "specificity": m.tn / max(m.tn + m.fp, 1), "recall": m.recall}  # fmt: skip


def scored(folder: Path, paths: list[Path], labels: np.ndarray, t: float) -> dict[str, float]:
    """A saved model's metrics through ``smokerdet.predict`` (its ONNX engine)."""
    import smokerdet

    got = {p.path: p.probability for p in smokerdet.predict(paths, model=str(folder), workers=0)}
    m = binary_metrics(list(labels), [got[str(p)] for p in paths], t)
    return {"accuracy": m.accuracy, "f1": m.f1, "roc_auc": m.roc_auc,
            "specificity": m.tn / max(m.tn + m.fp, 1), "recall": m.recall}  # fmt: skip


def grid(ns: list[int], repeats: int, site_x: np.ndarray, site_y: np.ndarray, val_x: np.ndarray,
         val_y: np.ndarray, start: adapt.HeadFit, rows: Any, pool_pos: np.ndarray,
         pool_neg: np.ndarray, test: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Held-out site accuracy and SD accuracy (means over draws) for other settings."""
    out = {}
    for pull in (0.5, 2.0, 8.0):
        for weight in (0.25, 0.5, 1.0):
            row = {}
            for n in ns:
                site, sd = [], []
                for r in range(repeats):
                    draw = np.random.default_rng([n, r])
                    idx = np.r_[draw.choice(pool_pos, n // 2, replace=False),
                                draw.choice(pool_neg, n // 2, replace=False)]  # fmt: skip
                    x, y = site_x[idx], site_y[idx]
                    kw = {"pull": pull, "rehearsal_weight": weight}
                    t = adapt.THRESHOLD
                    head = adapt.fit_head(x, y, start, rows, **kw)
                    site.append(score(head, site_x[test], site_y[test], t)["accuracy"])
                    sd.append(score(head, val_x, val_y, t)["accuracy"])
                row[str(n)] = {"site": statistics.mean(site), "sd_val": statistics.mean(sd)}
            out[f"pull {pull}, rehearsal {weight}"] = row
            print(f"pull {pull} rehearsal {weight}: " + ", ".join(
                f"N={n} {v['site']:.3f}/{v['sd_val']:.3f}" for n, v in row.items()), flush=True)  # fmt: skip
    return out


def per_source(
    engine: Any,
    head: adapt.HeadFit,
    t: float,
    extra: Path,
    somking: list[Path],
    hagrid: list[Path],
    looked_x: np.ndarray,
) -> dict[str, Any]:
    """The base model on each extra source, as the photos come (raw) and at one look: the
    share it gets right (recall on somking, specificity on HaGRID and on its hard gestures)."""
    raw_s = sorted((extra / "somking").rglob("*.jpg"))[: len(somking)]
    raw_h = sorted((extra / "hagrid").rglob("*.jpg"))[: len(hagrid)]
    xs = {"raw": (pooled_features(engine, raw_s), pooled_features(engine, raw_h)),
          "one look": (looked_x[: len(somking)], looked_x[len(somking) :])}  # fmt: skip
    hard = np.array([p.parent.name in ("call", "mute") for p in raw_h])
    out = {}
    for look, (s_x, h_x) in xs.items():
        ps, ph = head.probs(s_x), head.probs(h_x)
        out[look] = {"somking recall": float(np.mean(ps >= t)),
                     "hagrid specificity": float(np.mean(ph < t)),
                     "hagrid call+mute specificity": float(np.mean(ph[hard] < t)),
                     "both, accuracy": float((np.sum(ps >= t) + np.sum(ph < t)) / (len(ps) + len(ph)))}  # fmt: skip
    return out


def full_finetune(base: Path, paths: list[Path], labels: list[int], seed: int) -> Path:
    """``smokerdet train --init BASE --recipe full`` on the draw, in a scratch data dir."""
    import os

    from smokerdet.training.config import TrainConfig
    from smokerdet.training.train import train

    data = Path(tempfile.mkdtemp(prefix="site-"))
    for p, y in zip(paths, labels, strict=True):
        folder = data / ("smoking" if y else "not_smoking")
        folder.mkdir(exist_ok=True)
        (folder / p.name).symlink_to(p)
    os.environ.setdefault("SMOKERDET_HOME", tempfile.mkdtemp(prefix="home-"))
    result = train(
        TrainConfig(
            init=str(base),
            data=data,
            recipe="full",
            epochs=8,
            lr=1e-4,
            batch_size=16,
            seed=seed,
            name=f"full-{len(paths)}-{seed}",
            overwrite=True,
            tta=True,
            workers=0,
        )  # fmt: skip
    )
    return result.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="model that never saw extra/")
    parser.add_argument("--data", type=Path, default=SHARED / "smoker-detection")
    parser.add_argument("--extra", type=Path, default=SHARED / "extra")
    parser.add_argument("--n", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--full", type=int, nargs="*", default=[], help="N to fine-tune too")
    parser.add_argument("--full-repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="photos per source (smoke test)")
    parser.add_argument(
        "--grid", action="store_true", help="also try other pulls/rehearsal weights"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cap = args.limit or None
    somking = looked(sorted((args.extra / "somking").rglob("*.jpg"))[:cap])
    hagrid = looked(sorted((args.extra / "hagrid").rglob("*.jpg"))[:cap])
    ds = find_dataset(args.data)
    engine = open_engine(str(args.base), device="cpu")
    meta = read_meta(args.base)
    t0 = time.perf_counter()
    if not (args.base / rehearsal.REHEARSAL_FILE).is_file():  # a model made before rehearsal
        x = pooled_features(engine, [s.path for s in ds.train])
        rehearsal.save(args.base, x, np.array([s.label for s in ds.train]), meta.weights_sha256)
    rows = rehearsal.load(args.base, meta)
    site_paths = somking + hagrid
    site_x = pooled_features(engine, site_paths)
    site_y = np.array([1] * len(somking) + [0] * len(hagrid))
    val_x = pooled_features(engine, [s.path for s in ds.val])
    val_y = np.array([s.label for s in ds.val])
    print(f"features in {time.perf_counter() - t0:.0f}s", flush=True)

    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(site_y == 1), np.flatnonzero(site_y == 0)
    rng.shuffle(pos)
    rng.shuffle(neg)
    held = HELD_OUT if not args.limit else args.limit // 4
    test = np.r_[pos[:held], neg[:held]]
    pool_pos, pool_neg = pos[held:], neg[held:]
    start = start_head(args.base)
    report: dict[str, Any] = {"base": str(args.base), "held_out": len(test), "cells": {}}
    base_row = {
        "site": score(start, site_x[test], site_y[test], meta.threshold),
        "sd_val": score(start, val_x, val_y, meta.threshold),
    }
    report["cells"]["0"] = {"head": {k: {m: {"mean": v, "sd": 0.0} for m, v in d.items()}
                                     for k, d in base_row.items()}}  # fmt: skip
    report["base_per_source"] = per_source(
        engine, start, meta.threshold, args.extra, somking, hagrid, site_x
    )
    print(json.dumps(report["base_per_source"], indent=1), flush=True)
    for n in args.n:
        runs: dict[str, list[dict[str, Any]]] = {"head": [], "head_no_rehearsal": [], "full": []}
        for r in range(args.repeats):
            draw = np.random.default_rng([n, r])
            idx = np.r_[draw.choice(pool_pos, n // 2, replace=False),
                        draw.choice(pool_neg, n // 2, replace=False)]  # fmt: skip
            x, y = site_x[idx], site_y[idx]
            fold = adapt.site_folds(
                [Sample(Path(f"{i:06d}"), int(v)) for i, v in zip(idx, y, strict=True)], 0, r
            )
            for name, reh in (("head", rows), ("head_no_rehearsal", None)):
                oof = adapt.cross_validate_head(x, y, start, reh, fold)
                t, picked = adapt.THRESHOLD, best_threshold(list(y), list(oof))
                head = adapt.fit_head(x, y, start, reh)
                runs[name].append({"threshold": t, "site": score(head, site_x[test], site_y[test], t),
                                   "sd_val": score(head, val_x, val_y, t),
                                   "picked": picked,
                                   "site_at_picked": score(head, site_x[test], site_y[test], picked)})  # fmt: skip
            if n in args.full and r < args.full_repeats:
                t1 = time.perf_counter()
                folder = full_finetune(args.base, [site_paths[i] for i in idx], list(y), r)
                tm = read_meta(folder).threshold
                runs["full"].append({"threshold": tm,
                                     "site": scored(folder, [site_paths[i] for i in test], site_y[test], tm),
                                     "sd_val": scored(folder, [s.path for s in ds.val], val_y, tm),
                                     "seconds": time.perf_counter() - t1})  # fmt: skip
                shutil.rmtree(folder, ignore_errors=True)
        cell = {}
        for name, rs in runs.items():
            if not rs:
                continue
            cell[name] = {
                where: {m: {"mean": statistics.mean(r_[where][m] for r_ in rs),
                            "sd": statistics.stdev(r_[where][m] for r_ in rs) if len(rs) > 1 else 0.0}
                        for m in rs[0][where]}
                for where in ("site", "sd_val", "site_at_picked") if where in rs[0]
            }  # fmt: skip
            ts = [r_.get("picked", r_["threshold"]) for r_ in rs]
            cell[name]["threshold_range"] = [min(ts), max(ts)]
            cell[name]["runs"] = len(rs)
        report["cells"][str(n)] = cell
        h = cell["head"]
        print(f"N={n}: site acc {h['site']['accuracy']['mean']:.3f} ± {h['site']['accuracy']['sd']:.3f} "
              f"auc {h['site']['roc_auc']['mean']:.3f}; sd_val acc {h['sd_val']['accuracy']['mean']:.3f}; "
              f"thresholds {h['threshold_range']}", flush=True)  # fmt: skip
    if args.grid:
        report["grid"] = grid(args.n, args.repeats, site_x, site_y, val_x, val_y, start, rows,
                              pool_pos, pool_neg, test)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
