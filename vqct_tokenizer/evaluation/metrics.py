"""Fidelity metrics on RGB images in [0, 1]: PSNR, SSIM and MS-SSIM, pure torch, plus a streaming meter.

All three are computed per image on float RGB data with data range 1.0 and then averaged over
images. Inputs are ``(B, 3, H, W)`` tensors; nothing is clamped or quantized here.

* **PSNR** = 10·log10(1 / MSE), MSE over all pixels and the three channels of one image. An image
  reconstructed exactly has infinite PSNR, and so does the mean over a set that contains one.
* **SSIM** (Wang et al. 2004): Gaussian window 11×11 with sigma 1.5, K1 = 0.01, K2 = 0.03,
  C1 = (K1·L)², C2 = (K2·L)² with L = 1; "valid" filtering (no padding), as in the reference
  ``ssim_index.m``. The SSIM map is averaged over positions for each RGB channel separately, then
  the three channel values are averaged.
* **MS-SSIM** (Wang et al. 2003): the standard 5 scales with weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2×2 average pooling between scales, contrast-structure
  terms at every scale and the full SSIM (luminance included) at the coarsest one, each clamped at 0
  before the power so that the product stays real. Per channel, then averaged over channels.
  Images too small for 5 scales (the 11-pixel window must fit the coarsest scale, i.e. a side of at
  least 176) use fewer scales: the most that fit, with the first weights renormalized to sum to 1.
  Images smaller than the window use one scale and a window as wide as the image (odd). See
  :func:`ms_ssim_plan`; the evaluation report records the plan that was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) RGB batches, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------- PSNR
def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, 3, H, W) batches in [0, 1]; ``inf`` where the images are equal."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)  # 1/0 -> inf -> inf dB


# ---------------------------------------------------------------------------------------- SSIM
def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64)."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-coords.pow(2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of (N, 1, H, W)."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (image, channel) mean SSIM and mean contrast-structure term, shapes (B, C)."""
    b, c, h, w = x.shape
    g = gaussian_window(window).to(device=x.device)
    # channels are filtered independently: fold them into the batch
    x = x.double().reshape(b * c, 1, h, w)
    y = y.double().reshape(b * c, 1, h, w)
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    var_x = _blur(x * x, g) - mu_x.pow(2)
    var_y = _blur(y * y, g) - mu_y.pow(2)
    cov = _blur(x * y, g) - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data range L = 1
    cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
    lum_map = (2.0 * mu_x * mu_y + c1) / (mu_x.pow(2) + mu_y.pow(2) + c1)
    ssim_val = (lum_map * cs_map).flatten(1).mean(1).view(b, c)
    cs_val = cs_map.flatten(1).mean(1).view(b, c)
    return ssim_val, cs_val


def _window_for(h: int, w: int) -> int:
    """The standard 11-tap window, or the largest odd window that fits a smaller image."""
    side = min(h, w, SSIM_WINDOW)
    return side if side % 2 == 1 else side - 1


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of (B, 3, H, W) batches in [0, 1] (see module docstring); 1 where equal."""
    _check_pair(x, y)
    ssim_val, _ = _ssim_terms(x, y, _window_for(x.shape[2], x.shape[3]))
    return ssim_val.mean(1)


# ---------------------------------------------------------------------------------------- MS-SSIM
@dataclass(frozen=True)
class MSSSIMPlan:
    """How MS-SSIM is computed for one image size."""

    scales: int
    window: int
    weights: tuple[float, ...]

    def describe(self) -> str:
        note = "" if self.scales == len(MS_SSIM_WEIGHTS) else \
            f" (image too small for {len(MS_SSIM_WEIGHTS)} scales; first weights renormalized)"
        return f"{self.scales} scale(s), {self.window}x{self.window} Gaussian window{note}"


def ms_ssim_plan(h: int, w: int) -> MSSSIMPlan:
    """Scales, window and weights used for an h×w image.

    The coarsest scale must hold the whole window: with the 11-tap window, 5 scales need a side of
    11·2⁴ = 176. Smaller images use the most scales that fit (64×64: 64, 32, 16 -> 3 scales) and the
    first weights of the standard 5, renormalized to sum to 1.
    """
    window = _window_for(h, w)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(h, w) // 2 ** scales >= window:
        scales += 1
    weights = MS_SSIM_WEIGHTS[:scales]
    total = sum(weights)
    return MSSSIMPlan(scales, window, tuple(wt / total for wt in weights))


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image MS-SSIM of (B, 3, H, W) batches in [0, 1] (see module docstring); 1 where equal."""
    _check_pair(x, y)
    plan = ms_ssim_plan(x.shape[2], x.shape[3])
    weights = torch.tensor(plan.weights, dtype=torch.float64, device=x.device)
    terms = []
    for scale in range(plan.scales):
        ssim_val, cs_val = _ssim_terms(x, y, plan.window)
        last = scale == plan.scales - 1
        terms.append((ssim_val if last else cs_val).clamp(min=0.0))
        if not last:
            x, y = _halve(x), _halve(y)
    stacked = torch.stack(terms, dim=-1)  # (B, C, scales)
    return stacked.pow(weights).prod(-1).mean(1)


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2×2 average pooling; an odd last row or column is dropped."""
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    return F.avg_pool2d(x[:, :, :h, :w], 2)


# ---------------------------------------------------------------------------------------- streaming
class FidelityMeter:
    """Running means of per-image PSNR, SSIM and MS-SSIM; holds only sums, so memory is flat."""

    NAMES = ("psnr", "ssim", "ms_ssim")

    def __init__(self) -> None:
        self.count = 0
        self.sums = {name: 0.0 for name in self.NAMES}
        self.plan: MSSSIMPlan | None = None

    @torch.no_grad()
    def update(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        """Add a batch of (B, 3, H, W) originals and their reconstructions, both in [0, 1]."""
        values = {"psnr": psnr(real, recon), "ssim": ssim(real, recon), "ms_ssim": ms_ssim(real, recon)}
        for name, v in values.items():
            self.sums[name] += float(v.sum())
        self.count += real.shape[0]
        self.plan = self.plan or ms_ssim_plan(real.shape[2], real.shape[3])

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {name: math.nan for name in self.NAMES}
        return {name: total / self.count for name, total in self.sums.items()}
