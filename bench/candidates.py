#!/usr/bin/env python
"""Screen backbones and data sources cheaply: linear probes on frozen ImageNet features.

A fine-tune costs ~30 min here, so candidates are screened on what a fine-tune starts from:
each backbone's pooled features, extracted once per photo, and a logistic-regression probe
fitted in milliseconds. On those features it measures, with 3-fold CV repeated over 3 seeds:

- ``cv``: each backbone, trained on Smoker Detection alone or with the extra sources,
  scored on held-out Smoker Detection photos (accuracy, F1, ROC-AUC, mean and sd over the
  9 fold-seed runs) and per source on held-out extra photos;
- ``loso``: leave-one-source-out: fit without one extra source, score on it;
- ``shortcut``: how well a probe tells the two extra sources apart (= their class, as each
  holds one), on the raw photos and brought to one look, and how a probe fitted on the
  extra sources alone does on Smoker Detection (a source detector scores near chance there);
- ``stress``: fitted on the Training split (+ extras), scored on the Validation photos
  under the shifts of ``bench/stress.py``.

``--speed`` instead times each backbone through ONNX Runtime (batch 1, 2 threads).

Example:
    python bench/candidates.py --json bench/results/candidates.json
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
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from sources import CACHE, one_look  # noqa: E402
from stress import SHIFTS  # noqa: E402
from tensors import eval_transform  # noqa: E402

from smokerdet.data.images import load_image  # noqa: E402
from smokerdet.data.layout import find_dataset  # noqa: E402
from smokerdet.metrics import binary_metrics  # noqa: E402
from smokerdet.models.build import resolve_data_config  # noqa: E402

SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}  # each backbone's own ImageNet size
SHARED = REPO.parent / "shared" / "data"


def backbone(name: str) -> torch.nn.Module:
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(f"tf_efficientnet_{name}", num_classes=0)
    state = load_file(str(REPO / "build" / f"tf_efficientnet_{name}.in1k.safetensors"))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier")})
    return model.eval()


def photo_sets(data: Path, extra: Path, raw_per_source: int) -> dict[str, list[Any]]:
    """name -> list of (PIL image, label); extras at one look and (a sample) raw."""
    ds = find_dataset(data)
    tmp = CACHE
    tmp.mkdir(parents=True, exist_ok=True)

    def looked(paths: list[Path]) -> list[Any]:
        out = []
        for p in paths:
            dst = tmp / f"{p.parent.name}-{p.name}"
            if not dst.exists():
                one_look(p, dst)
            out.append(load_image(dst))
        return out

    somking = sorted((extra / "somking").rglob("*.jpg"))
    hagrid = sorted((extra / "hagrid").rglob("*.jpg"))
    rng = random.Random(0)
    sets = {
        "sd_train": [(load_image(s.path), s.label) for s in ds.train],
        "sd_val": [(load_image(s.path), s.label) for s in ds.val],
        "somking": [(im, 1) for im in looked(somking)],
        "hagrid": [(im, 0) for im in looked(hagrid)],
        "somking_raw": [(load_image(p), 1) for p in rng.sample(somking, raw_per_source)],
        "hagrid_raw": [(load_image(p), 0) for p in rng.sample(hagrid, raw_per_source)],
    }
    sets["hagrid_hard"] = [
        (im, 0) for (im, _), p in zip(sets["hagrid"], hagrid, strict=True)
        if p.parent.name in ("call", "mute")
    ]  # fmt: skip
    for shift, fn in SHIFTS.items():
        if shift != "clean":
            srng = random.Random(0)
            sets[f"val_{shift}"] = [(fn(im, srng), y) for im, y in sets["sd_val"]]
    return sets


@torch.inference_mode()
def features(model: torch.nn.Module, size: int, images: list[Any]) -> np.ndarray:
    transform = eval_transform(resolve_data_config(model, size))
    out = []
    for i in range(0, len(images), 32):
        batch = torch.stack([transform(im) for im, _ in images[i : i + 32]])
        out.append(model(batch).numpy())
    return np.concatenate(out)


def fit_probe(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> Callable[[np.ndarray], Any]:
    """Logistic regression on standardised features (L-BFGS); returns a probability fn."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd).float()
    yt = torch.from_numpy(y).float()
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        loss = loss + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_, b_ = w.detach().numpy(), float(b.detach())
    return lambda z: 1 / (1 + np.exp(-(((z - mu) / sd) @ w_ + b_)))


def folds(n_by_group: dict[str, np.ndarray], k: int, seed: int) -> dict[str, np.ndarray]:
    """Fold index per photo, stratified within each (source, label) group."""
    out = {}
    for name, y in n_by_group.items():
        f = np.zeros(len(y), int)
        for label in (0, 1):
            idx = np.flatnonzero(y == label)
            np.random.default_rng([seed, label, len(name)]).shuffle(idx)
            f[idx] = np.arange(len(idx)) % k
        out[name] = f
    return out


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def cv(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray], k: int, seeds: int) -> dict:
    sd_x = np.concatenate([feats["sd_train"], feats["sd_val"]])
    sd_y = np.concatenate([labels["sd_train"], labels["sd_val"]])
    groups = {"sd": sd_y, "somking": labels["somking"], "hagrid": labels["hagrid"]}
    xs = {"sd": sd_x, "somking": feats["somking"], "hagrid": feats["hagrid"]}
    result: dict[str, Any] = {}
    for variant, used in (("sd_only", ["sd"]), ("sd+extra", ["sd", "somking", "hagrid"])):
        runs: dict[str, list[float]] = {}
        for seed in range(seeds):
            fold = folds(groups, k, seed)
            for i in range(k):
                x = np.concatenate([xs[g][fold[g] != i] for g in used])
                y = np.concatenate([groups[g][fold[g] != i] for g in used])
                probe = fit_probe(x, y)
                held = fold["sd"] == i
                m = binary_metrics(list(sd_y[held]), list(probe(sd_x[held])), 0.5)
                for key, v in (("accuracy", m.accuracy), ("f1", m.f1), ("roc_auc", m.roc_auc)):
                    runs.setdefault(key, []).append(v)
                for g in ("somking", "hagrid"):
                    p = probe(xs[g][fold[g] == i]) >= 0.5
                    acc = float(np.mean(p == groups[g][fold[g] == i]))
                    runs.setdefault(f"{g}_accuracy", []).append(acc)
        result[variant] = {key: summarise(v) for key, v in runs.items()}
    return result


def loso(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    sd_x = np.concatenate([feats["sd_train"], feats["sd_val"]])
    sd_y = np.concatenate([labels["sd_train"], labels["sd_val"]])
    out = {}
    for left_out, kept in (("somking", "hagrid"), ("hagrid", "somking")):
        for name, extra in (("sd_only", []), (f"sd+{kept}", [kept])):
            x = np.concatenate([sd_x, *[feats[e] for e in extra]])
            y = np.concatenate([sd_y, *[labels[e] for e in extra]])
            probe = fit_probe(x, y)
            acc = float(np.mean((probe(feats[left_out]) >= 0.5) == labels[left_out]))
            row = {"accuracy_on_left_out": acc}
            if left_out == "hagrid":
                hard = float(np.mean(probe(feats["hagrid_hard"]) < 0.5))
                row["specificity_call_mute"] = hard
            out[f"{left_out} left out, fit on {name}"] = row
    return out


def shortcut(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Source separability (2-fold, raw vs one look) and a source detector scored on SD."""
    out = {}
    for look, (a, b) in (
        ("raw", ("somking_raw", "hagrid_raw")),
        ("one look", ("somking", "hagrid")),
    ):
        n = min(len(feats[a]), len(feats[b]))
        x = np.concatenate([feats[a][:n], feats[b][:n]])
        y = np.concatenate([np.ones(n), np.zeros(n)])
        half = np.arange(2 * n) % 2 == 0
        probe = fit_probe(x[half], y[half])
        out[f"source probe accuracy, {look}"] = float(np.mean((probe(x[~half]) >= 0.5) == y[~half]))
    probe = fit_probe(
        np.concatenate([feats["somking"], feats["hagrid"]]),
        np.concatenate([labels["somking"], labels["hagrid"]]),
    )
    sd_x = np.concatenate([feats["sd_train"], feats["sd_val"]])
    sd_y = np.concatenate([labels["sd_train"], labels["sd_val"]])
    m = binary_metrics(list(sd_y), list(probe(sd_x)), 0.5)
    out["fit on extras alone, scored on SD"] = {"accuracy": m.accuracy, "roc_auc": m.roc_auc}
    return out


def stress(feats: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    out = {}
    for name, extra in (("sd_only", []), ("sd+extra", ["somking", "hagrid"])):
        probe = fit_probe(
            np.concatenate([feats["sd_train"], *[feats[e] for e in extra]]),
            np.concatenate([labels["sd_train"], *[labels[e] for e in extra]]),
        )
        row = {}
        for shift in SHIFTS:
            key = "sd_val" if shift == "clean" else f"val_{shift}"
            row[shift] = float(np.mean((probe(feats[key]) >= 0.5) == labels[key]))
        row["mean_shifted"] = statistics.mean(v for k, v in row.items() if k != "clean")
        out[name] = row
    return out


def speed(name: str, repeats: int) -> dict[str, Any]:
    """Median (min-max) ms per photo through ONNX Runtime, batch 1, 2 threads."""
    import onnxruntime as ort

    model, size = backbone(name), SIZES[name]
    path = REPO / "build" / f"{name}-probe.onnx"
    torch.onnx.export(
        model, torch.zeros(1, 3, size, size), str(path), opset_version=17, dynamo=False
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(10):
        session.run(None, {session.get_inputs()[0].name: x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(20):
            session.run(None, {session.get_inputs()[0].name: x})
        times.append((time.perf_counter() - t) / 20 * 1000)
    params = sum(p.numel() for p in model.parameters())
    return {"size": size, "params_m": params / 1e6, "ms_median": statistics.median(times),
            "ms_min": min(times), "ms_max": max(times), "repeats": repeats}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "smoker-detection")
    parser.add_argument("--extra", type=Path, default=SHARED / "extra")
    parser.add_argument("--backbones", nargs="+", default=list(SIZES))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--raw-per-source", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", action="store_true", help="time ONNX inference only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.speed:
        report: dict[str, Any] = {b: speed(b, args.repeats) for b in args.backbones}
    else:
        t0 = time.perf_counter()
        sets = photo_sets(args.data, args.extra, args.raw_per_source)
        labels = {k: np.array([y for _, y in v]) for k, v in sets.items()}
        print(f"{sum(map(len, sets.values()))} photos loaded in {time.perf_counter() - t0:.0f}s")
        report = {}
        for name in args.backbones:
            t0 = time.perf_counter()
            model = backbone(name)
            feats = {k: features(model, SIZES[name], v) for k, v in sets.items()}
            cost = time.perf_counter() - t0
            print(f"{name}: features in {cost:.0f}s", flush=True)
            report[name] = {
                "feature_seconds": cost,
                "cv": cv(feats, labels, args.folds, args.seeds),
                "loso": loso(feats, labels),
                "shortcut": shortcut(feats, labels),
                "stress": stress(feats, labels),
            }
            print(json.dumps(report[name], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
