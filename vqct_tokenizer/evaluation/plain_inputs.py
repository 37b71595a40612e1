"""Plain test images: flat colours, gradients, a colour ramp and a checkerboard.

A tokenizer that passes only brightness through its tokens fails these at once (issue 20: the
round-2 default gave flat green back at 10 dB). Used by ``benchmarks/plain_inputs.py``, the
collapse probes and ``tests/test_pretrained.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FLAT_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128),
    "red": (220, 30, 30), "green": (40, 180, 60), "blue": (30, 60, 200),
    "teal": (0, 128, 128), "olive": (128, 128, 0), "yellow": (240, 220, 40), "magenta": (200, 40, 200),
}


def plain_images(size: int = 256) -> dict[str, np.ndarray]:
    """{name: uint8 (size, size, 3)}: the flat colours, a linear gradient (R left to right, G top to
    bottom, B constant), a hue ramp (the HSV wheel at full saturation and value, left to right) and a
    black-and-white checkerboard of size/8-pixel squares."""
    out = {f"flat-{name}": np.full((size, size, 3), rgb, dtype=np.uint8) for name, rgb in FLAT_COLOURS.items()}
    ramp = np.linspace(0, 255, size)
    out["gradient"] = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                                np.full((size, size), 128.0)], axis=-1).round().astype(np.uint8)
    out["colour-ramp"] = np.tile(_hue_row(size)[None], (size, 1, 1))
    square = max(1, size // 8)
    cells = (np.add.outer(np.arange(size) // square, np.arange(size) // square) % 2).astype(np.uint8) * 255
    out["checkerboard"] = np.repeat(cells[:, :, None], 3, axis=2)
    return out


def _hue_row(size: int) -> np.ndarray:
    """(size, 3) uint8: hue 0 -> 1 at saturation 1, value 1."""
    h = np.linspace(0.0, 1.0, size, endpoint=False) * 6.0
    x = 1.0 - np.abs(h % 2.0 - 1.0)
    sector = h.astype(int)
    zeros, ones = np.zeros(size), np.ones(size)
    table = [(ones, x, zeros), (x, ones, zeros), (zeros, ones, x), (zeros, x, ones), (x, zeros, ones), (ones, zeros, x)]
    rgb = np.zeros((size, 3))
    for s, (r, g, b) in enumerate(table):
        m = sector == s
        rgb[m] = np.stack([r[m], g[m], b[m]], axis=1)
    return (rgb * 255).round().astype(np.uint8)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) / 255.0 ** 2
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def score_plain_inputs(tokenizer: Any, size: int = 256, refine_steps: int = 0) -> dict[str, float]:
    """{name: PSNR (dB)} of native-size reconstructions from tokens, rounded to 0.01 dB; with
    ``refine_steps``, from tokens refined against the decoder (``encode``'s option)."""
    out = {}
    for name, image in plain_images(size).items():
        recon = tokenizer.reconstruct(image, resize=False, output_type="np", decode_precision="fp32",
                                      refine_steps=refine_steps)
        out[name] = round(psnr_uint8(image, recon), 2)
    return out


def random_flat_colours(count: int = 48, seed: int = 0) -> list[tuple[int, int, int]]:
    """``count`` RGB colours, each channel 255·sin²(u), u uniform on [0, π/2] (the arcsine law: many
    saturated colours, blacks and whites), from a fixed seed.

    Why: the ten named flat colours are ten points, and their PSNR moved by up to 11 dB between
    runs 1,200 steps from one start; a median and a 10th percentile over many colours move less."""
    rng = np.random.default_rng(seed)
    values = (255 * np.sin(rng.uniform(0.0, math.pi / 2, size=(count, 3))) ** 2).round().astype(int)
    return [tuple(int(v) for v in row) for row in values]  # type: ignore[misc]


def score_random_flats(tokenizer: Any, size: int = 128, count: int = 48, seed: int = 0) -> dict[str, float]:
    """Flat images of ``random_flat_colours`` at size², reconstructed from tokens (fp32 decode):
    median, 10th percentile and minimum PSNR (dB), the share at >= 30 dB, the mean absolute shift of
    the central half's mean colour and its mean standard deviation (levels of 0-255: a uniform colour
    error shows in the first, texture in the second), and the median PSNR of decoding the
    unquantized latent (the error before the quantizer).

    The shift is split two ways: into luma and chroma (mean |ΔY| and mean |Δ(Cb, Cr)|, BT.601), and
    into what one affine colour map over all the colours explains and what it leaves
    (``affine_residual``, the mean absolute error left after the best least-squares map d ≈ A·c + b).
    A residual near the shift means the error is per-colour scatter, not a bias or a contraction
    that a colour transform could undo."""
    import torch

    psnrs, shifts, textures, unquantized, means = [], [], [], [], []
    lo, hi = size // 4, size - size // 4
    model = tokenizer.model
    for rgb in random_flat_colours(count, seed):
        image = np.full((size, size, 3), rgb, dtype=np.uint8)
        recon = tokenizer.reconstruct(image, resize=False, output_type="np", decode_precision="fp32")
        psnrs.append(min(psnr_uint8(image, recon), 99.0))
        centre = recon[lo:hi, lo:hi].reshape(-1, 3).astype(np.float64)
        means.append(centre.mean(0))
        shifts.append(np.abs(centre.mean(0) - np.array(rgb)).mean())
        textures.append(centre.std(0).mean())
        # the same image through encoder and decoder with no quantizer between them
        x = torch.tensor(rgb, dtype=torch.float32).div(127.5).sub(1.0).view(1, 3, 1, 1).expand(1, 3, size, size)
        with torch.no_grad():
            plain = model.decode_latent(model.encode_latent(x.to(tokenizer.codebook.device)).float()).float()
        plain = plain.clamp(-1, 1).add(1).mul(127.5).round()[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
        unquantized.append(min(psnr_uint8(image, plain), 99.0))
    p = np.array(psnrs)
    colours, decoded = np.array(random_flat_colours(count, seed), dtype=np.float64), np.array(means)
    return {**_colour_error_split(colours, decoded),"median": round(float(np.median(p)), 2), "p10": round(float(np.percentile(p, 10)), 2),
            "min": round(float(p.min()), 2), "share_30db": round(float((p >= 30).mean()), 3),
            "mean_shift": round(float(np.mean(shifts)), 2), "centre_std": round(float(np.mean(textures)), 2),
            "unquantized_median": round(float(np.median(unquantized)), 2), "count": count, "size": size}


_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _colour_error_split(colours: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """(n, 3) input and decoded mean colours -> luma / chroma error and the error an affine map leaves."""
    delta = (decoded - colours) @ _YCBCR.T
    design = np.c_[colours, np.ones(len(colours))]
    fit, *_ = np.linalg.lstsq(design, decoded, rcond=None)
    residual = decoded - design @ fit
    return {"luma_error": round(float(np.abs(delta[:, 0]).mean()), 2),
            "chroma_error": round(float(np.hypot(delta[:, 1], delta[:, 2]).mean()), 2),
            "affine_residual": round(float(np.abs(residual).mean()), 2)}


__all__ = ["FLAT_COLOURS", "plain_images", "psnr_uint8", "random_flat_colours", "score_plain_inputs",
           "score_random_flats"]
