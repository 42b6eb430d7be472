#!/usr/bin/env python
"""Familiarity: how well it separates a model's validation photos from other photos, and
what it costs predict.

Quality: pooled features (through ONNX) of the Training split (fit), the Validation split
(calibrate; the "familiar" side), two sets from other sources (``extra/somking``: web photos
of people smoking, ``extra/hagrid``: gesture selfies) and shifted copies of the validation
photos (the shifts of bench/stress.py). For each variant of the description: the AUROC of
separating Validation from each other set, and the share of each flagged unfamiliar at the
calibrated cut. Features are cached (``--cache``), so variants cost seconds.

Speed: ``score_paths`` over the same photos with and without familiarity, alternated, median
and spread over repeats.

Example:
    python bench/familiarity.py --model default --json bench/results/familiarity.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from smokerdet.data.images import load_image, preprocess
from smokerdet.data.layout import find_dataset
from smokerdet.inference.backend import open_engine
from smokerdet.inference.batch import score_paths
from smokerdet.inference.engine import Engine
from smokerdet.inference.familiarity import FAMILIAR_SHARE, fit, load_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stress import SHIFTS  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared/data"
IMAGE_EXT = {".jpg", ".jpeg", ".png"}


def sources(data: Path, extra: Path) -> dict[str, list[Path]]:
    """The photo sets, by name."""
    ds = find_dataset(data)

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXT)

    return {
        "train": [s.path for s in ds.get("train")],
        "val": [s.path for s in ds.get("val")],
        "somking": images(extra / "somking"),
        "hagrid": images(extra / "hagrid"),
    }


def features(engine: Engine, images: list[Any]) -> np.ndarray:
    """``(N, 2, C)`` pooled features of each photo and of its mirror image (no TTA)."""
    cfg = engine.meta.data_config
    engine.meta.tta = None
    out = []
    for i in range(0, len(images), 8):
        x = np.stack([preprocess(im, cfg) for im in images[i : i + 8]])
        plain = engine.features_arrays(x)[1]
        mirror = engine.features_arrays(np.ascontiguousarray(x[..., ::-1]))[1]
        out.append(np.stack([plain, mirror], axis=1))
    return np.concatenate(out)


def extract(engine: Engine, sets: dict[str, list[Path]]) -> dict[str, np.ndarray]:
    """Features of every set, plus each stress shift of the validation photos."""
    out: dict[str, np.ndarray] = {}
    for name, paths in sets.items():
        t = time.perf_counter()
        out[name] = features(engine, [load_image(p) for p in paths])
        print(f"{name}: {len(paths)} photos, {time.perf_counter() - t:.0f} s", file=sys.stderr)
    val_images = [load_image(p) for p in sets["val"]]
    for shift, fn in SHIFTS.items():
        if shift != "clean":
            rng = random.Random(0)
            out[f"shift:{shift}"] = features(engine, [fn(im, rng) for im in val_images])
    return out


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outside photo is farther out than an inside one), ties counted half."""
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for v in np.unique(scores):  # average ranks for ties
        same = scores == v
        ranks[same] = ranks[same].mean()
    r_out = ranks[len(inside) :].sum()
    n_in, n_out = len(inside), len(outside)
    return float((r_out - n_out * (n_out + 1) / 2) / (n_in * n_out))


def knn_distance(train: np.ndarray, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """Cosine distance to the k-th nearest training photo (needs the training set itself)."""
    t = train / np.linalg.norm(train, axis=1, keepdims=True)

    def dist(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = np.sort(x @ t.T, axis=1)[:, ::-1]
        return 1 - sims[:, k - 1]

    return dist


def diag_distance(train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Distance with a diagonal covariance plus a ridge (each feature on its own)."""
    mean, var = train.mean(0), train.var(0)
    var = var + 0.1 * var.mean()
    return lambda x: np.sqrt((((x - mean) ** 2) / var).mean(1))


def variants(feats: dict[str, np.ndarray]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Distance functions fitted on the training features (TTA-pooled unless 'no TTA')."""
    train = feats["train"].mean(1)
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for dims in (16, 32, 64, 128, 256):
        out[f"log ppca-{dims}"] = fit(train, None, dims=dims).distance
    for scale in (1.0, 30.0, 100.0):
        out[f"log({scale:g}x) ppca-64"] = fit(train, None, dims=64, log_scale=scale).distance
    for dims in (64, 128):
        out[f"ppca-{dims}"] = fit(train, None, dims=dims, log_scale=0).distance
    stats = fit(train, None, dims=64, log_scale=0)
    # the top directions alone, nothing outside them (plain PCA-whitened Mahalanobis)
    out["pca-64 only"] = lambda x: np.sqrt(
        ((((x - stats.mean) @ stats.components) ** 2) / stats.variances).sum(1)
    )
    out["diag+ridge"] = diag_distance(train)
    out["knn-1 cosine"] = knn_distance(train, 1)
    out["knn-5 cosine"] = knn_distance(train, 5)
    return out


def quality(feats: dict[str, np.ndarray]) -> dict[str, Any]:
    """AUROC and share flagged for each variant against each other set."""
    others = [k for k in feats if k not in ("train", "val")]
    table: dict[str, Any] = {}
    for tta in (True, False):
        pool = (lambda f: f.mean(1)) if tta else (lambda f: f[:, 0])
        for name, dist in variants(feats).items():
            if not tta and name != "log ppca-64":
                continue
            d_val = dist(pool(feats["val"]))
            cut = float(np.quantile(d_val, FAMILIAR_SHARE))
            row: dict[str, Any] = {}
            for other in others:
                d = dist(pool(feats[other]))
                row[other] = {"auroc": auroc(d_val, d), "flagged": float((d > cut).mean())}
            d_both = dist(np.concatenate([pool(feats["somking"]), pool(feats["hagrid"])]))
            row["somking+hagrid"] = {
                "auroc": auroc(d_val, d_both),
                "flagged": float((d_both > cut).mean()),
            }
            row["train_flagged"] = float((dist(pool(feats["train"])) > cut).mean())
            table[name + ("" if tta else " (no TTA)")] = row
    return table


def speed(engine: Engine, paths: list[Path], repeats: int, workers: int | None) -> dict[str, Any]:
    """Seconds to score ``paths`` with and without familiarity (alternated), median + spread."""
    stats = load_for(engine)  # the model's own stats
    assert stats is not None, f"{engine.name} has no familiarity stats to time"
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeats):
        for key, fam in (("without", None), ("with", stats)):
            t = time.perf_counter()
            rows = list(score_paths(engine, paths, workers=workers, familiarity=fam))
            times[key].append(time.perf_counter() - t)
            assert all((r.familiarity is None) == (fam is None) for r in rows)
    return {
        k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "runs": v}
        for k, v in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=SHARED / "smoker-detection")
    parser.add_argument("--extra", type=Path, default=SHARED / "extra")
    parser.add_argument("--cache", type=Path, default=Path("bench/results/familiarity-feats.npz"))
    parser.add_argument("--speed-photos", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    engine = open_engine(args.model, backend="onnx", threads=2)
    sets = sources(args.data, args.extra)
    if args.cache.is_file():
        feats = dict(np.load(args.cache))
    else:
        feats = extract(engine, sets)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, **feats)
    result: dict[str, Any] = {"model": engine.name, "quality": quality(feats)}
    print(f"{'variant':<22}" + "".join(f"{k:>18}" for k in next(iter(result["quality"].values()))))
    for name, row in result["quality"].items():
        cells = [
            f"{v['auroc']:.3f} ({v['flagged']:.0%})" if isinstance(v, dict) else f"{v:.0%}"
            for v in row.values()
        ]
        print(f"{name:<22}" + "".join(f"{c:>18}" for c in cells))
    if not args.skip_speed:
        engine.meta.tta = "hflip"
        photos = sets["val"][: args.speed_photos]
        result["speed"] = {
            "photos": len(photos),
            "in_process": speed(engine, photos, args.repeats, 0),
            "workers": speed(engine, photos, args.repeats, None),
        }
        for mode in ("in_process", "workers"):
            for key, v in result["speed"][mode].items():
                print(f"{mode:<11} {key:<8} median {v['median_s']:.2f} s "
                      f"(min {v['min_s']:.2f}, max {v['max_s']:.2f}) for {len(photos)} photos")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
