"""Grouped nearest-code quantization over an external codebook.

VQCT's quantizer (``quantizer="vqct"``) is two groups over one (A+N)×D codebook:

    channels [0, D)   -> mean of the k nearest adjective codes (rows [0, A))
    channels [D, 2D)  -> the nearest noun code                 (rows [A, A+N))

A plain VQGAN is one group with k=1. The codebook is an argument, not a parameter: in training it is
recomputed by the transfer network every step, at inference it is a fixed buffer.

With ``normalize=True`` (``VQCTConfig.normalize_codes``, the cosine lookup) each group's latent and
every code are l2-normalised, so nearest means smallest angle. The latent is normalised once, in
``VQAutoencoder.encode_latent`` (so training losses see the same unit vectors); the codebook is
normalised here, in both ``encode`` and ``lookup``, so a codebook that is not unit-norm still works.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..config import CodeGroup


def nearest_codes(z: torch.Tensor, codes: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k nearest rows of ``codes`` (M, D) for each row of ``z`` (P, D), nearest first.

    Distances are computed in float32 whatever the autocast dtype: bf16 squared distances tie and
    flip nearest neighbours.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        z32, c32 = z.float(), codes.float()
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2 ; ||z||^2 is constant per row and dropped
        dist = c32.pow(2).sum(1)[None, :] - 2.0 * (z32 @ c32.t())
        if k == 1:
            return dist.argmin(dim=1, keepdim=True)
        return dist.topk(k, dim=1, largest=False, sorted=True).indices


class GroupedQuantizer(torch.nn.Module):
    """Quantizes (B, G·D, h, w) latents group by group; returns ids (B, h, w, Σk)."""

    def __init__(self, groups: Sequence[CodeGroup], dim: int, normalize: bool = False) -> None:
        super().__init__()
        self.groups = tuple(groups)
        self.dim = dim
        self.normalize = normalize

    def normalize_latent(self, z: torch.Tensor) -> torch.Tensor:
        """(B, G·D, h, w) -> the same with each group's D channels l2-normalised (cosine lookup only)."""
        if not self.normalize:
            return z
        b, c, h, w = z.shape
        # norms in float32 (a bf16 sum of squares over D channels is coarse), result in z's dtype
        unit = F.normalize(z.float().reshape(b, len(self.groups), self.dim, h, w), dim=2)
        return unit.reshape(b, c, h, w).to(z.dtype)

    def codes(self, codebook: torch.Tensor) -> torch.Tensor:
        """The codebook rows as the search and the lookup use them: unit-norm under the cosine lookup."""
        return F.normalize(codebook, dim=1) if self.normalize else codebook

    @property
    def tokens_per_cell(self) -> int:
        return sum(g.k for g in self.groups)

    def encode(self, z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """(B, G·D, h, w) -> LongTensor (B, h, w, Σk) of global codebook row ids."""
        b, c, h, w = z.shape
        if c != self.dim * len(self.groups):
            raise ValueError(f"latent has {c} channels, quantizer expects {self.dim * len(self.groups)}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)  # (P, G·D), P = B·h·w
        codebook = self.codes(codebook)
        ids = []
        for gi, g in enumerate(self.groups):
            part = flat[:, gi * self.dim:(gi + 1) * self.dim]
            ids.append(nearest_codes(part, codebook[g.code_start:g.code_end], g.k) + g.code_start)
        return torch.cat(ids, dim=1).reshape(b, h, w, -1)

    def lookup(self, ids: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """ids (B, h, w, Σk) -> quantized latent (B, G·D, h, w): each group's codes averaged."""
        parts, col = [], 0
        codebook = self.codes(codebook)
        for g in self.groups:
            vecs = codebook[ids[..., col:col + g.k]]  # (B, h, w, k, D)
            parts.append(vecs.mean(dim=-2))
            col += g.k
        return torch.cat(parts, dim=-1).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (z_q, ids). z_q carries gradient to the codebook, not to z (see training losses)."""
        ids = self.encode(z.detach(), codebook)
        return self.lookup(ids, codebook).to(z.dtype), ids
