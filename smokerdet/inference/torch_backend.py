"""The torch backend: one forward pass on any device, and Grad-CAM for heatmaps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smokerdet.inference.engine import Engine, sigmoid

if TYPE_CHECKING:
    import numpy as np

    from smokerdet.models import LoadedModel

# ---------------------------------------------------------------------------------------------
# torch


class TorchEngine(Engine):
    """A model run by torch (any device); heatmaps by Grad-CAM."""

    backend = "torch"

    def __init__(self, loaded: LoadedModel, device: str) -> None:
        self.loaded, self.device = loaded, device
        self.name, self.meta, self.path = loaded.name, loaded.meta, loaded.path
        self.metadata: dict[str, str] = {}

    def score_arrays(self, batch: np.ndarray) -> list[float]:
        import torch

        pass

        return forward_probs(self.loaded, torch.from_numpy(batch), self.device)

    def features_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        import torch

        pass

        probs, pooled = forward_probs_features(self.loaded, torch.from_numpy(batch), self.device)
        return probs, pooled

    def maps_arrays(self, batch: np.ndarray) -> tuple[list[float], np.ndarray]:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        logits, maps = grad_cam(self.loaded.model, x)
        if self.meta.tta == "hflip":
            logits_f, maps_f = grad_cam(self.loaded.model, torch.flip(x, dims=[3]))
            logits, maps = (logits + logits_f) / 2, (maps + torch.flip(maps_f, dims=[2])) / 2
        return sigmoid(logits.cpu().numpy()), maps.cpu().numpy()


def grad_cam(model: Any, x: Any) -> tuple[Any, Any]:
    """Grad-CAM on the last feature map: (logits, maps before ReLU), scaled like CAM.

    The gradient of each logit with respect to the output of the last conv stage, averaged
    over the grid, weights that stage's channels. Images in an eval-mode batch are
    independent, so one backward pass over the sum gives every image's own gradient.
    """
    import torch

    with torch.enable_grad():
        features = model.forward_features(x).detach().requires_grad_(True)
        logits = model.forward_head(features).reshape(-1)
        (grads,) = torch.autograd.grad(logits.sum(), features)
    h, w = features.shape[-2:]
    # mean over the grid, times h*w, so the map has CAM's scale (the same after normalising)
    alpha = grads.mean(dim=(2, 3), keepdim=True) * (h * w)
    maps = (alpha * features.detach()).sum(dim=1)
    return logits.detach().float(), maps.float()


def forward_probs(loaded: LoadedModel, batch: object, device: str) -> list[float]:
    """Probabilities of smoking for a normalised batch, with the model's own TTA."""
    import torch

    x = batch.to(device, non_blocking=True)  # type: ignore[attr-defined]
    if device == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = loaded.model(x).float().reshape(-1)
        if loaded.meta.tta == "hflip":
            logits = (logits + loaded.model(torch.flip(x, dims=[3])).float().reshape(-1)) / 2
        return torch.sigmoid(logits).tolist()


def forward_probs_features(
    loaded: LoadedModel, batch: object, device: str
) -> tuple[list[float], np.ndarray]:
    """Probabilities and pooled features ``(N, C)`` from one pass (TTA-averaged, like ONNX)."""
    import torch

    x = batch.to(device, non_blocking=True)  # type: ignore[attr-defined]
    if device == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    model = loaded.model
    with torch.inference_mode():
        features = model.forward_features(x)
        logits = model.forward_head(features).float().reshape(-1)
        pooled = features.float().mean(dim=(2, 3))
        if loaded.meta.tta == "hflip":
            flipped = model.forward_features(torch.flip(x, dims=[3]))
            logits = (logits + model.forward_head(flipped).float().reshape(-1)) / 2
            pooled = (pooled + flipped.float().mean(dim=(2, 3))) / 2
        return torch.sigmoid(logits).tolist(), pooled.cpu().numpy()
