"""Build timm models with one output logit, and load backbone weights into them.

Example:
    >>> from smokerdet.models.build import create_model, resolve_data_config
    >>> model = create_model("resnet10t", pretrained=False)  # doctest: +SKIP
    >>> resolve_data_config(model, img_size=224).input_size  # doctest: +SKIP
    224
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from smokerdet.data import DataConfig, ResizeMode
from smokerdet.errors import WeightsError
from smokerdet.models.archs import check_arch

DEFAULT_ARCH = "resnet50"
#: Largest input side accepted anywhere (training flag or a checkpoint's metadata).
MAX_INPUT_SIZE = 1024
MIN_INPUT_SIZE = 16


def create_model(
    arch: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
) -> Any:
    """Create a timm model with a single-logit head.

    Args:
        arch: any timm model name (``resnet50``, ``resnet10t``, ``tf_efficientnet_lite0``...).
        pretrained: load timm's ImageNet weights from the weights cache, downloading them
            through the Hugging Face Hub client on first use (see :mod:`smokerdet.models.hub`),
            or the weights imported for ``arch`` with ``download weights --force``. Never falls
            back to random weights.
        weights: a local state dict (safetensors or ``.pth``) for the backbone; its classifier
            head is dropped and replaced.

    Raises:
        UnknownArchError: timm has no such model.
        WeightsError: the pretrained weights can't be had, or ``weights`` does not fit.
    """
    import timm

    check_arch(arch)
    if pretrained and weights:
        raise WeightsError("use either --pretrained or --weights, not both")
    model = timm.create_model(arch, pretrained=False, num_classes=1)
    reset_head(model)
    if pretrained:
        from smokerdet.models.hub import pretrained_weights

        try:
            backbone = pretrained_weights(arch)
        except WeightsError as e:
            # Training can do without them; the hint says how wherever they failed.
            raise WeightsError(
                e.message,
                hint=f"{e.hint}; or train without them: --no-pretrained, or --weights FILE",
            ) from None
        load_backbone_weights(model, backbone.path)
    elif weights:
        load_backbone_weights(model, weights)
    return model


def reset_head(model: Any) -> None:
    """Zero the single-logit head, so training starts at p = 0.5 for every image.

    Some timm inits scale by 1/sqrt(fan_out), which for one output draws weights from
    U(-1, 1): initial logits of +-10 and a first epoch spent undoing them.
    """
    import torch

    head = model.get_classifier()
    for p in head.parameters():
        torch.nn.init.zeros_(p)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state dict from safetensors or a ``.pth``, never unpickling arbitrary objects.

    ``.pth`` files go through ``torch.load(weights_only=True)``, which refuses anything but
    tensors and plain containers. Nested ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and
    ``module.`` prefixes (DataParallel) are unwrapped.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}", hint="check --weights")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"cannot read weights from {p}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
            hint="give a safetensors file or a plain state-dict .pth (pickled objects are refused)",
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{p} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def classifier_prefixes(model: Any) -> tuple[str, ...]:
    """Names of the model's classifier head modules, from its timm config."""
    head = model.pretrained_cfg.get("classifier", "fc")
    return tuple(head) if isinstance(head, (list, tuple)) else (head,)


def load_backbone_weights(model: Any, path: str | os.PathLike[str]) -> None:
    """Load a timm/torchvision state dict file into ``model``, dropping and replacing its head.

    Raises:
        WeightsError: naming the first missing, unexpected or mis-shaped tensor.
    """
    load_backbone_state(model, read_state_dict(path), str(path))


def load_backbone_state(
    model: Any,
    sd: dict[str, Any],
    source: str,
    hint: str = "check that --arch matches the architecture the weights were saved from",
) -> None:
    """Load a state dict (from ``source``, named in errors) into ``model`` but its head.

    Raises:
        WeightsError: naming the first missing, unexpected or mis-shaped tensor, with ``hint``.
    """
    heads = classifier_prefixes(model)

    def is_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in heads)

    sd = {k: v for k, v in sd.items() if not is_head(k)}
    own = {k: v for k, v in model.state_dict().items() if not is_head(k)}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise WeightsError(
            f"{source} does not fit {model.pretrained_cfg.get('architecture', 'the model')}: "
            + ", ".join(parts),
            hint=hint,
        )
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(
                f"{source}: tensor {k} has shape {tuple(v.shape)}, the model expects "
                f"{tuple(own[k].shape)}",
                hint=hint,
            )
    model.load_state_dict(sd, strict=False)


def resolve_data_config(
    model: Any, img_size: int | None = None, resize_mode: ResizeMode = "letterbox"
) -> DataConfig:
    """The model's own preprocessing (timm ``resolve_model_data_config``), at ``img_size``."""
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    size = img_size or int(cfg["input_size"][-1])
    return DataConfig(
        input_size=size,
        mean=tuple(float(x) for x in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(x) for x in cfg["std"]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 1.0)) if resize_mode == "crop" else 1.0,
        resize_mode=resize_mode,
    )


def pick_device(device: str = "auto") -> str:
    """Resolve ``auto`` to ``cuda``, ``mps`` or ``cpu``; check an explicit choice exists.

    Raises:
        ConfigError: ``device`` is not one of :data:`smokerdet.config.DEVICES`, or is not
            available on this machine.
    """
    import torch

    from smokerdet.config import check_device
    from smokerdet.errors import ConfigError

    check_device(device)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cuda" and not cuda:
        raise ConfigError("--device cuda: no CUDA device is available", hint="use --device cpu")
    if device == "mps" and not mps:
        raise ConfigError("--device mps: MPS is not available here", hint="use --device cpu")
    return device
