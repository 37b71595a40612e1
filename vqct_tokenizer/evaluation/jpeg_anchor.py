"""JPEG at the tokenizer's bit budget: an anchor people understand.

For each image, the highest JPEG quality whose whole file (headers included) fits in the bits the
tokenizer spends on that image (``bits_per_image`` of the evaluation's rate: the cell count times the
bits of one cell's ids). Baseline (non-progressive) JPEG from Pillow/libjpeg with 4:2:0 chroma
subsampling and optimised Huffman tables, the settings an encoder would pick for small files. File
size is monotone in quality for all practical purposes, so a binary search over 1..95 finds it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

QUALITY_RANGE = (1, 95)


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=True, subsampling="4:2:0")
    return buf.getvalue()


def jpeg_at_budget(img: Image.Image, max_bits: float) -> tuple[Image.Image, int, int]:
    """(decoded image, quality, file bits) of the best JPEG of ``img`` that fits ``max_bits``.

    When not even quality 1 fits, quality 1 is returned (and its bits exceed the budget).
    """
    lo, hi = QUALITY_RANGE
    best: tuple[int, bytes] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = jpeg_bytes(img, mid)
        if len(data) * 8 <= max_bits:
            best, lo = (mid, data), mid + 1
        else:
            hi = mid - 1
    if best is None:
        best = (QUALITY_RANGE[0], jpeg_bytes(img, QUALITY_RANGE[0]))
    quality, data = best
    with Image.open(io.BytesIO(data)) as decoded:
        return decoded.convert("RGB"), quality, len(data) * 8


def to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> 8-bit RGB."""
    arr = x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


def from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


@dataclass
class JpegAnchor:
    """Per-batch JPEG reconstructions at a per-image bit budget, and what they cost."""

    bits_per_cell: float
    downsample_factor: int
    qualities: list[int] = field(default_factory=list)
    bits: list[int] = field(default_factory=list)
    budgets: list[float] = field(default_factory=list)

    def budget(self, height: int, width: int) -> float:
        cells = math.ceil(height / self.downsample_factor) * math.ceil(width / self.downsample_factor)
        return cells * self.bits_per_cell

    def reconstruct(self, real: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the JPEG reconstructions, same shape."""
        out = []
        for x in real:
            budget = self.budget(x.shape[-2], x.shape[-1])
            decoded, quality, bits = jpeg_at_budget(to_pil(x), budget)
            self.qualities.append(quality)
            self.bits.append(bits)
            self.budgets.append(budget)
            out.append(from_pil(decoded))
        return torch.stack(out)

    def summary(self) -> dict[str, float | int | str]:
        n = len(self.bits)
        return {
            "images": n,
            "budget_bits_per_image": sum(self.budgets) / n if n else 0.0,
            "jpeg_bits_per_image": sum(self.bits) / n if n else 0.0,
            "mean_quality": sum(self.qualities) / n if n else 0.0,
            "over_budget": sum(b > m for b, m in zip(self.bits, self.budgets)),
            "encoder": "Pillow/libjpeg baseline JPEG, 4:2:0, optimize=True; per image the highest quality in "
                       f"{QUALITY_RANGE[0]}..{QUALITY_RANGE[1]} whose whole file fits the tokenizer's bits "
                       "(quality 1 when none fits: counted in over_budget)",
        }
