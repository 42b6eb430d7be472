"""The torch backend: the forward pass on any device, and Grad-CAM for heatmaps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smokerdet.inference.engine import Engine

if TYPE_CHECKING:
    import numpy as np

    from smokerdet.models import LoadedModel


class TorchEngine(Engine):
    """A model run by torch (any device); heatmaps by Grad-CAM, whatever the head."""

    backend = "torch"

    def __init__(self, loaded: LoadedModel, device: str) -> None:
        self.loaded, self.device = loaded, device
        self.name, self.meta, self.path = loaded.name, loaded.meta, loaded.path
        self.metadata: dict[str, str] = {}

    @property
    def has_maps(self) -> bool:
        return True

    def in_worker(self) -> TorchEngine:
        import torch

        # One thread per worker process: a small network scales across processes, not across
        # threads (bench/predict.py), and a forked child must never start an OpenMP pool after
        # its parent used one (it hangs); with one thread it never starts one.
        torch.set_num_threads(1)
        return self

    def _input(self, batch: np.ndarray) -> Any:
        import torch

        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if self.device == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model = self.loaded.model
        with torch.inference_mode():
            features = model.forward_features(self._input(batch))
            logits = model.forward_head(features)
            return _numpy(logits.reshape(-1)), _numpy(features)

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, features, maps = grad_cam(self.loaded.model, self._input(batch))
        return _numpy(logits), _numpy(features), _numpy(maps)


def _numpy(t: Any) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def grad_cam(model: Any, x: Any) -> tuple[Any, Any, Any]:
    """Grad-CAM on the last feature map: (logits, features, maps before ReLU), scaled like CAM.

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
    features = features.detach()
    return logits.detach(), features, (alpha * features).sum(dim=1)
