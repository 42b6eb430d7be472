#!/usr/bin/env python
"""Does int8 pay on this CPU? Post-training static quantization of a smokerdet model.

The issue's stretch goal for prediction: at least 2x the naive loop through bf16, int8 or
torch.compile, as long as validation accuracy stays within 0.5 points. bf16 and compile are
timed by ``bench/predict.py``; this script tries int8 with torch.ao's FX graph mode, the
route that covers convolutions (dynamic quantization covers only Linear):

1. fold every BatchNorm into the convolution before it (eval mode), keeping its activation;
2. turn TF-style dynamic "same" padding into a fixed zero pad (inputs are always the model's
   square input size, so the padding is a constant);
3. ``prepare_fx`` with the backend's default qconfig (oneDNN by default: on this CPU, the
   x86/fbgemm kernels ran 4x slower than fp32), calibrate on N training photos,
   ``convert_fx``;
4. compare fp32 and int8 on the validation split (the model's TTA and stored threshold, and a
   threshold re-picked on validation) and time both forwards at batch 1 and 8, channels_last
   for fp32.

Example:
    python bench/quantize.py --model default --calibration 128 --json bench/results/int8.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from datetime import date
from pathlib import Path

import torch
from tensors import eval_transform
from torch import nn

from smokerdet.data.images import load_image
from smokerdet.data.layout import find_dataset
from smokerdet.metrics import best_threshold, binary_metrics
from smokerdet.models.registry import load_model

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared/data/smoker-detection"


def fold_batchnorms(module: nn.Module) -> None:
    """Fold each BatchNorm2d into the convolution that precedes it among its siblings.

    timm's BatchNormAct2d carries its activation: the BatchNorm is replaced by that activation.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batchnorms(child)
    last_conv: str | None = None
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d):
            last_conv = name
        elif isinstance(child, nn.BatchNorm2d) and last_conv is not None:
            conv = getattr(module, last_conv)
            setattr(module, last_conv, fuse_conv_bn_eval(conv, child))
            act = getattr(child, "act", nn.Identity())
            drop = getattr(child, "drop", nn.Identity())
            setattr(module, name, nn.Sequential(drop, act) if not isinstance(drop, nn.Identity)
                    else act)  # fmt: skip
            last_conv = None


def static_same_padding(model: nn.Module, size: int) -> None:
    """Replace timm's Conv2dSame (padding computed per call) by ZeroPad2d + Conv2d."""
    shapes: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, mod in model.named_modules():
        if type(mod).__name__ == "Conv2dSame":
            hooks.append(
                mod.register_forward_pre_hook(
                    lambda m, inp, name=name: shapes.__setitem__(name, tuple(inp[0].shape[-2:]))
                )
            )
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for name, (ih, iw) in shapes.items():
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        conv = model.get_submodule(name)
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        dh, dw = conv.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                          conv.dilation, conv.groups, conv.bias is not None)  # fmt: skip
        plain.load_state_dict(conv.state_dict())
        pad = nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        setattr(parent, name.rsplit(".", 1)[-1], nn.Sequential(pad, plain))


def probs(model: nn.Module, xs: list[torch.Tensor], tta: bool, channels_last: bool) -> list:
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(xs), 16):
            x = torch.stack(xs[i : i + 16])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).float().reshape(-1)
            if tta:
                logits = (logits + model(torch.flip(x, dims=[3])).float().reshape(-1)) / 2
            out += torch.sigmoid(logits).tolist()
    return out


def rate(model: nn.Module, size: int, bs: int, tta: bool, channels_last: bool) -> float:
    x = torch.randn(bs, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 5.0:
            model(x)
            if tta:
                model(torch.flip(x, dims=[3]))
            n += bs
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--calibration", type=int, default=128, help="training photos")
    parser.add_argument("--engine", default="onednn", choices=["onednn", "x86", "fbgemm"])
    parser.add_argument("--no-timing", action="store_true", help="accuracy only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = args.engine
    loaded = load_model(args.model)
    fp32 = loaded.model.float().eval()
    cfg, tta = loaded.meta.data_config, loaded.meta.tta == "hflip"
    size = cfg.input_size
    transform = eval_transform(cfg)
    splits = find_dataset(args.data)
    step = max(1, len(splits.train) // args.calibration)
    calib = [transform(load_image(s.path)) for s in splits.train[::step][: args.calibration]]
    val = [transform(load_image(s.path)) for s in splits.val]
    labels = [s.label for s in splits.val]

    t0 = time.perf_counter()
    folded = copy.deepcopy(fp32)
    fold_batchnorms(folded)
    static_same_padding(folded, size)
    example = (torch.zeros(1, 3, size, size),)
    prepared = prepare_fx(folded, get_default_qconfig_mapping(args.engine), example)
    with torch.inference_mode():
        for i in range(0, len(calib), 16):
            prepared(torch.stack(calib[i : i + 16]))
    int8 = convert_fx(prepared)
    build_s = time.perf_counter() - t0

    rows = []
    for what, model, cl in (("fp32", fp32.to(memory_format=torch.channels_last), True),
                            ("int8", int8, False)):  # fmt: skip
        p = probs(model, val, tta, cl)
        at_stored = binary_metrics(labels, p, loaded.meta.threshold)
        repicked = binary_metrics(labels, p, best_threshold(labels, p))
        rows.append({
            "what": what, "acc": at_stored.accuracy, "f1": at_stored.f1,
            "auc": at_stored.roc_auc, "acc_repicked": repicked.accuracy,
        })  # fmt: skip
        for bs in (1, 8):
            rows[-1][f"img_s_b{bs}"] = 0.0 if args.no_timing else rate(model, size, bs, tta, cl)
    print(f"{loaded.name}: {loaded.meta.arch} at {size}px, TTA {loaded.meta.tta}, threshold "
          f"{loaded.meta.threshold:.3f}; int8 built in {build_s:.1f}s from "
          f"{len(calib)} calibration photos; {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'model':<6} {'val acc':>8} {'F1':>6} {'AUC':>6} {'acc*':>6} {'img/s b1':>9} "
          f"{'img/s b8':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['what']:<6} {r['acc']:>8.4f} {r['f1']:>6.4f} {r['auc']:>6.4f} "
              f"{r['acc_repicked']:>6.4f} {r['img_s_b1']:>9.1f} {r['img_s_b8']:>9.1f}")  # fmt: skip
    print("acc*: threshold re-picked on validation for that model")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "date": date.today().isoformat(), "cores": os.cpu_count(),
            "torch": torch.__version__, "model": loaded.name, "build_s": build_s, "rows": rows,
        }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
