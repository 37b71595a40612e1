"""Synthetic training images: "dead leaves", occluding discs of flat random colours.

Why (issue 20): round 4's default returns flat saturated colours at 15-21 dB even at 64², its
training size (``benchmarks/results/size_dependence.md``), so the cause is not the image size but
what it learned from: open-domain photos hold few large flat regions of saturated colour, and chroma
jitter (``training/colour.py``) can only rotate the colours the photos have. A dead-leaves image (Lee,
Mumford and Huang 2001) stacks discs whose radii follow a power law, p(r) ∝ r⁻³, which gives the
scale statistics of natural images, with flat regions and sharp edges. Its colours here are drawn
per channel from an arcsine law (Beta(½, ½)), so saturated colours, black and white are common.
``data.synthetic = p`` replaces a training sample by one with probability p. The target is the
input, so the tokenizer is taught to keep colours it would rarely see in photos.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def _radius(rng: random.Random, r_min: float, r_max: float) -> float:
    """A radius from p(r) ∝ r⁻³ on [r_min, r_max] (inverse CDF)."""
    u = rng.random()
    return (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5


def _colour(rng: random.Random) -> tuple[float, float, float]:
    # arcsine law: sin² of a uniform angle; mass near 0 and 1 in each channel
    return tuple(math.sin(rng.uniform(0.0, math.pi / 2)) ** 2 for _ in range(3))  # type: ignore[return-value]


def dead_leaves(rng: random.Random, size: int, discs: int = 40, r_min: float = 0.03, r_max: float = 0.7,
                supersample: int = 2) -> torch.Tensor:
    """(3, size, size) float32 RGB in [0, 1]: ``discs`` discs painted back to front over a flat
    background, radii (as fractions of the side) from p(r) ∝ r⁻³ on [r_min, r_max], rendered at
    ``supersample`` times the size and box-filtered down (anti-aliased edges)."""
    if size < 1 or discs < 0 or not 0.0 < r_min <= r_max:
        raise ValueError(f"dead_leaves needs size >= 1, discs >= 0 and 0 < r_min <= r_max, "
                         f"got {size}, {discs}, {r_min}, {r_max}")
    n = size * supersample
    canvas = np.empty((n, n, 3), np.float32)
    canvas[:] = _colour(rng)
    coords = (np.arange(n, dtype=np.float32) + 0.5) / n
    for _ in range(discs):
        r = _radius(rng, r_min, r_max)
        cx, cy = rng.uniform(-r, 1.0 + r), rng.uniform(-r, 1.0 + r)
        inside = (coords[None, :] - cx) ** 2 + (coords[:, None] - cy) ** 2 < r * r
        canvas[inside] = _colour(rng)
    image = canvas.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


__all__ = ["dead_leaves"]
