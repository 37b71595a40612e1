"""Colour fidelity on photos: how much of each chroma axis survives the round trip.

A tokenizer that carries luminance well but not chroma scores a high PSNR (photos hold little
chroma) and still returns greens as grey. The slope of the output's chroma on the input's, pooled
over all pixels (least squares through the origin), says how much of an axis survives: 1 keeps
it, 0.5 halves it. Round 3's default kept Cb at 0.93 and Cr at 0.52 on open test photos (issue 20).
"""

from __future__ import annotations

import numpy as np
import torch

COLOUR_NOTE = ("slope: least-squares slope of the reconstruction's Y (about mid-grey), Cb and Cr (BT.601) on the "
               "input's, over all pixels; 1 keeps an axis, 0.5 halves it. psnr: per axis, 0..255 scale")

# BT.601 full-range RGB -> (Y, Cb, Cr) on 0..255, Cb and Cr centred on 0
_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


class ChromaMeter:
    """Accumulates (input, reconstruction) pairs of uint8 (H, W, 3) images."""

    def __init__(self) -> None:
        self.cross = np.zeros(3)   # Σ in·out per Y, Cb, Cr
        self.power = np.zeros(3)   # Σ in²
        self.sq_err = np.zeros(3)
        self.count = 0

    def update_tensors(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        """(B, 3, H, W) batches in [0, 1], as ``vqct eval`` holds them."""
        to_pixels = lambda t: t.detach().float().cpu().permute(0, 2, 3, 1).numpy() * 255.0  # noqa: E731
        self.update(to_pixels(real), to_pixels(recon))

    def update(self, image: np.ndarray, recon: np.ndarray) -> None:
        """Arrays of RGB pixels on the 0..255 scale, channels last (uint8 or float, any leading shape)."""
        a = image.reshape(-1, 3).astype(np.float64) @ _YCBCR.T
        b = recon.reshape(-1, 3).astype(np.float64) @ _YCBCR.T
        a[:, 0] -= 128.0  # luminance slope about mid-grey, not about black
        b[:, 0] -= 128.0
        self.cross += (a * b).sum(0)
        self.power += (a * a).sum(0)
        self.sq_err += ((a - b) ** 2).sum(0)
        self.count += a.shape[0]

    def result(self) -> dict[str, dict[str, float]]:
        """{"slope": {Y, Cb, Cr}, "psnr": {Y, Cb, Cr}} over every pixel seen."""
        if self.count == 0:
            raise ValueError("ChromaMeter: no images")
        names = ("Y", "Cb", "Cr")
        slope = self.cross / np.maximum(self.power, 1e-12)
        psnr = 10 * np.log10(255.0 ** 2 / np.maximum(self.sq_err / self.count, 1e-12))
        return {"slope": {n: round(float(v), 3) for n, v in zip(names, slope)},
                "psnr": {n: round(float(v), 2) for n, v in zip(names, psnr)}}
