"""Colour in training: a reconstruction loss balanced over opponent colour axes, and chroma jitter.

Why (issue 20, ``benchmarks/colour_probes.py``): in the open training photos the pixel colours'
principal axes are luminance (std 0.74 on the model's [-1, 1] scale), blue-orange (0.25) and
green-magenta (0.11). A per-RGB-channel L1 sees the green-magenta axis with 1/49 of luminance's
variance, and gradient descent learns a direction at a speed that scales with its variance, so the
round-3 default still halved red-green chroma on test photos (slope of output on input Cr 0.52,
Cb 0.93) and returned flat green as grey-olive. Two remedies, each a config switch:

* ``loss.colour_balance = a``: the L1 is taken on the training set's colour principal axes, each
  weighted by (std_luminance / std_axis) ** a, luminance keeping weight 1. ``a = 1`` whitens the
  colours; 0 is plain RGB L1. ``loss.colour_balance_norm = "grey"`` rescales it so that a grey
  (brightness) error weighs what it does under RGB L1 (see ColourBalancedL1).
* ``data.hue_jitter = p``: with probability p a training crop's chroma plane (BT.601 Cb, Cr) is
  rotated by a uniform random angle and scaled by a factor from ``data.saturation``, luminance
  kept. Photos rarely hold saturated greens or magentas; rotated ones do. The target is the
  input, so a tokenizer loses nothing by seeing colours a camera rarely records.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch
from torch import nn

# BT.601 full-range RGB -> (Y, Cb, Cr), the JPEG transform
_YCBCR = torch.tensor([[0.299, 0.587, 0.114],
                       [-0.168736, -0.331264, 0.5],
                       [0.5, -0.418688, -0.081312]])
_RGB = torch.linalg.inv(_YCBCR)
COLOUR_BALANCE_NORMS = ("axes", "grey")


def jitter_chroma(x: torch.Tensor, rng: random.Random, saturation: Sequence[float] = (1.0, 1.0)) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] -> the same image with its (Cb, Cr) plane rotated by a uniform angle
    and scaled by a factor uniform in ``saturation``; luminance unchanged, clamped to [0, 1]."""
    angle = rng.uniform(0.0, 2.0 * math.pi)
    scale = rng.uniform(float(saturation[0]), float(saturation[1]))
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    chroma = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = (_RGB @ chroma @ _YCBCR).to(x.dtype)
    return torch.einsum("ij,jhw->ihw", m, x - 0.5).add_(0.5).clamp_(0.0, 1.0)  # chroma is centred on grey


def colour_axes(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) RGB samples -> (axes (3, 3), one unit axis per row, largest variance first; stds (3,))."""
    p = pixels.double()
    cov = torch.cov(p.T)
    var, vec = torch.linalg.eigh(cov)          # ascending
    order = torch.argsort(var, descending=True)
    return vec[:, order].T.float(), var[order].clamp_min(1e-12).sqrt().float()


class ColourBalancedL1(nn.Module):
    """Mean |W (x - x̂)| per pixel over the colour axes, W = diag(weights) @ axes; see the module notes.

    ``axes`` (3, 3) rows are unit colour directions, ``stds`` their standard deviations in the data;
    weight_i = (stds[0] / stds[i]) ** exponent. The mean runs over the 3 axes, as RGB L1's over channels.

    ``norm``: "axes" leaves W as it is. A grey error (δ, δ, δ) then projects to about √3·δ on the
    luminance axis and to ~0 on the others, so it costs about 0.58·δ, against δ under RGB L1: the
    balance also lowers the weight of every brightness and contrast error, relative to the
    perceptual and VQ terms. "grey" scales W so that a grey error costs exactly what RGB L1 charges,
    and only the chroma axes gain weight.
    """

    def __init__(self, axes: torch.Tensor, stds: torch.Tensor, exponent: float, norm: str = "axes") -> None:
        super().__init__()
        if norm not in COLOUR_BALANCE_NORMS:
            raise ValueError(f"norm must be one of {COLOUR_BALANCE_NORMS}, got {norm!r}")
        weights = (stds[0] / stds) ** float(exponent)
        matrix = weights[:, None] * axes
        if norm == "grey":
            grey = matrix @ torch.ones(3, dtype=matrix.dtype)          # W (1, 1, 1)
            matrix = matrix * (3.0 / grey.abs().sum())                 # mean_i |W_i δ1| = |δ|
        self.register_buffer("matrix", matrix, persistent=False)

    def forward(self, x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        diff = torch.einsum("ij,bjhw->bihw", self.matrix.to(x.dtype), x - rec)
        return diff.abs().mean()


def sample_pixels(dataset: "torch.utils.data.Dataset", images: int = 64, per_image: int = 1024,
                  seed: int = 0) -> torch.Tensor:
    """(≤ images·per_image, 3) pixels in [-1, 1] from evenly spaced items of a training ImageDataset
    (its crop, no jitter), the same on every rank and on resume."""
    n = len(dataset)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(min(images, n)):
        x = dataset.plain_sample(i * n // min(images, n))       # (3, R, R) in [-1, 1]
        flat = x.reshape(3, -1).T
        take = torch.randperm(flat.shape[0], generator=g)[:per_image]
        out.append(flat[take])
    return torch.cat(out)
