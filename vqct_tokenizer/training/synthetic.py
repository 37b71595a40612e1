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

Round 7: dead leaves still left flat saturated colours, smooth gradients and hard-edged two-colour
patterns 3-10 dB short of 30 dB at 256² (``benchmarks/results/plain_inputs.json``), and decoding the
*unquantized* latent missed by as much, so the autoencoder itself, not only the codebook, had not
learned them. ``plain_pattern`` draws the content of graphics, screenshots and logos that photos and
dead leaves lack: a flat field, a linear gradient between two colours, a hue ramp, or a
checkerboard/stripes of two colours, each at a random orientation, scale and phase with colours from
the same arcsine law. ``data.synthetic_plain = q`` makes a share q of the synthetic samples such
patterns instead of dead leaves. The fixed test images of ``evaluation/plain_inputs.py`` are single
points of these families; they are never drawn as such.

Round 9: the decoder learns a flat area's colour from the cells near an edge. Trained on 64² crops
(8x8 cells, none more than 3 cells from an edge), it gives a 64² flat red back at 33 dB but the
interior of a 256² one at 23 dB, and PSNR falls with each cell further from the edge; on photos no
such fall exists (docs/BENCHMARKS.md "Flat interiors"). ``plain_batch`` draws the same patterns at a
larger size for the trainer's extra large-plain batches (``data.large_plain_every``).
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


PLAIN_KINDS = ("flat", "gradient", "hue-ramp", "checker")


def plain_pattern(rng: random.Random, size: int, kind: str | None = None) -> torch.Tensor:
    """(3, size, size) float32 RGB in [0, 1]: one of ``PLAIN_KINDS`` (drawn uniformly if ``kind`` is
    None) at a random orientation, scale and phase; see the module notes."""
    if size < 1:
        raise ValueError(f"plain_pattern needs size >= 1, got {size}")
    kind = rng.choice(PLAIN_KINDS) if kind is None else kind
    if kind not in PLAIN_KINDS:
        raise ValueError(f"kind must be one of {PLAIN_KINDS}, got {kind!r}")
    a = np.array(_colour(rng), np.float32)
    if kind == "flat":
        image = np.broadcast_to(a, (size, size, 3))
    else:
        angle = rng.uniform(0.0, 2.0 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        t = (np.cos(angle) * xx + np.sin(angle) * yy) / size           # (size, size), a span of ~1.4 at most
        t = t - t.min()
        if kind == "gradient":
            b = np.array(_colour(rng), np.float32)
            w = np.clip(t / max(t.max(), 1e-6) * rng.uniform(0.5, 1.5), 0.0, 1.0)[..., None]
            image = a * (1.0 - w) + b * w
        elif kind == "hue-ramp":
            hue = rng.random() + t * rng.uniform(0.25, 1.5)
            image = _hsv_to_rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        else:  # checker: squares (both axes) or stripes (one), of side 2 .. size/2 px
            if rng.random() < 0.5:  # graphics are mostly axis-aligned
                angle = rng.choice((0.0, 0.5 * math.pi))
            b = np.array(_colour(rng), np.float32)
            side = rng.uniform(2.0, max(2.0, size / 2))
            u = np.floor((np.cos(angle) * xx + np.sin(angle) * yy) / side + rng.random())
            v = np.floor((-np.sin(angle) * xx + np.cos(angle) * yy) / side + rng.random())
            odd = (u + v) % 2 if rng.random() < 0.5 else u % 2
            image = np.where(odd[..., None] > 0, b, a)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1)))


def plain_batch(seed: int, size: int, batch: int) -> torch.Tensor:
    """(batch, 3, size, size) float32 in [0, 1]: ``plain_pattern`` draws from ``random.Random(seed)``,
    so the batch of a given step is the same after a resume."""
    rng = random.Random(seed)
    return torch.stack([plain_pattern(rng, size) for _ in range(batch)])


def _hsv_to_rgb(hue: np.ndarray, saturation: float, value: float) -> np.ndarray:
    """(H, W) hue in turns (any real), scalar saturation and value -> (H, W, 3) RGB in [0, 1]."""
    h = (hue % 1.0) * 6.0
    # each channel's distance from its peak on the hue circle, as in the HSV hexcone
    k = (np.array([5.0, 3.0, 1.0], np.float32) + h[..., None]) % 6.0
    return value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


__all__ = ["PLAIN_KINDS", "dead_leaves", "plain_pattern"]
