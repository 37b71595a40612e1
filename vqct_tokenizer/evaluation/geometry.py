"""How many directions the latents and codes really use: the collapse diagnostic.

The centred participation ratio (PR) of a cloud of vectors is (Σλ)² / Σλ² over the eigenvalues of
its covariance: 1 when every vector lies on one line, D when the variance spreads evenly over D
directions. A VQ tokenizer whose pre-quantization latents have PR ≈ 1 passes one number per cell
to the decoder, however many bits its ids hold (issue 20: the round-2 default had PR 1.00 in both
groups and brought greens back grey).

``LatentGeometry`` accumulates a bounded sample of pre-quantization latent cells per code group
during an evaluation or a training run; ``pc_truncation_psnr`` measures how much the decoder loses
when each group's latent is cut to its top principal components (a decoder that reads only two
numbers per cell loses nothing).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..config import VQCTConfig

# Below this latent PR (per group, centred, 8x8 cells of photos at 256²) training warns. The
# collapsed round-2 recipe sat at 1.0-1.8 in every probe; raw 8x8x3 pixel patches of the open
# test photos have 1.9 (benchmarks/results/collapse_probes.md).
COLLAPSE_WARN_PR = 2.0


def _eigenvalues(x: torch.Tensor) -> torch.Tensor:
    x = x.detach().double()
    x = x - x.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(x).pow(2)


def participation_ratio(x: torch.Tensor) -> float:
    """(Σλ)² / Σλ² over the covariance eigenvalues of the rows of ``x`` (N, D); 0 for a constant cloud."""
    eig = _eigenvalues(x)
    total = eig.sum().item()
    return 0.0 if total == 0 else total ** 2 / eig.pow(2).sum().item()


def top_component_share(x: torch.Tensor) -> float:
    """Share of the rows' variance along their first principal component."""
    eig = _eigenvalues(x)
    return 0.0 if eig.sum() == 0 else (eig[0] / eig.sum()).item()


def cells(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B·h·w, C): one row per grid cell."""
    return latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])


def group_slices(config: VQCTConfig) -> dict[str, slice]:
    """Each code group's channels in the (B, G·D, h, w) latent."""
    d = config.codebook_dim
    return {g.name: slice(i * d, (i + 1) * d) for i, g in enumerate(config.groups)}


class LatentGeometry:
    """Per-group PR and top-component share of pre-quantization latents, over a bounded sample.

    Keeps at most ``max_cells`` rows, taking an even stride of each batch's cells so that memory
    stays flat over a dataset. ``compute(codebook)`` after ``update_ids`` adds the PR of the codes in use.
    """

    def __init__(self, config: VQCTConfig, max_cells: int = 16384, per_batch: int = 2048) -> None:
        self.config = config
        self.slices = group_slices(config)
        self.max_cells, self.per_batch = max_cells, per_batch
        self.rows: list[torch.Tensor] = []
        self.count = 0
        self.used: torch.Tensor | None = None

    def update(self, latent: torch.Tensor) -> None:
        """latent (B, G·D, h, w): sampled until ``max_cells`` rows are kept."""
        if self.count >= self.max_cells:
            return
        rows = cells(latent.detach()).float().cpu()
        step = max(1, math.ceil(rows.shape[0] / self.per_batch))
        rows = rows[::step][: self.max_cells - self.count]
        self.rows.append(rows)
        self.count += rows.shape[0]

    def update_ids(self, ids: torch.Tensor) -> None:
        """ids (B, h, w, Σk) or a list of grids: marks the codes in use (for ``used_codes_pr``)."""
        size = self.config.codebook_size
        flat = torch.cat([t.reshape(-1) for t in ids]) if isinstance(ids, (list, tuple)) else ids.reshape(-1)
        seen = torch.bincount(flat.cpu(), minlength=size)[:size] > 0
        self.used = seen if self.used is None else self.used | seen

    def compute(self, codebook: torch.Tensor | None = None) -> dict[str, dict[str, Any]]:
        """{group: {latent_pr, latent_top_share, dims[, used_codes_pr]}}; empty before any update."""
        if not self.rows:
            return {}
        z = torch.cat(self.rows)
        out: dict[str, dict[str, Any]] = {}
        for g in self.config.groups:
            part = z[:, self.slices[g.name]]
            entry: dict[str, Any] = {"latent_pr": participation_ratio(part), "latent_top_share": top_component_share(part),
                                     "dims": part.shape[1], "cells": part.shape[0]}
            if codebook is not None and self.used is not None:
                used = self.used[g.code_start:g.code_end].nonzero().flatten() + g.code_start
                entry["used_codes_pr"] = participation_ratio(codebook[used].float().cpu()) if used.numel() > 1 else None
                entry["codes_pr"] = participation_ratio(codebook[g.code_start:g.code_end].float().cpu())
            out[g.name] = entry
        return out


def summary_line(geometry: dict[str, dict[str, Any]]) -> str:
    """One line for logs: ``latent PR adjective 7.9 (top 0.31) | noun 9.1 (top 0.25)``."""
    return "latent PR " + " | ".join(f"{name} {g['latent_pr']:.1f} (top {g['latent_top_share']:.2f})"
                                     for name, g in geometry.items())


def collapsed_groups(geometry: dict[str, dict[str, Any]], threshold: float = COLLAPSE_WARN_PR) -> list[str]:
    return [name for name, g in geometry.items() if g["latent_pr"] < threshold]


@torch.no_grad()
def pc_truncation_psnr(model: torch.nn.Module, config: VQCTConfig, x: torch.Tensor,
                       ks: Sequence[int] = (1, 2, 4, 8)) -> dict[str, float]:
    """PSNR (dB, images in [-1, 1] scaled to [0, 1]) of decoding the *unquantized* latent, whole and
    with each group cut to its top-k principal components (fitted on these images' cells).

    ``model`` is a ``VQAutoencoder``; ``x`` (B, 3, H, W) in [-1, 1]. If the full latent and k = 2
    score alike, the decoder reads two numbers per cell at most.
    """
    lat = model.encode_latent(x).float()
    b, c, h, w = lat.shape
    rows = cells(lat)
    out = {"full": _psnr01(x, model.decode_latent(lat.to(x.dtype)))}
    for k in ks:
        cut = rows.clone()
        for sl in group_slices(config).values():
            part = rows[:, sl]
            mean = part.mean(dim=0, keepdim=True)
            _, _, vh = torch.linalg.svd(part - mean, full_matrices=False)
            basis = vh[:k]                                           # (k, D)
            cut[:, sl] = mean + (part - mean) @ basis.T @ basis
        lat_k = cut.reshape(b, h, w, c).permute(0, 3, 1, 2)
        out[f"top{k}"] = _psnr01(x, model.decode_latent(lat_k.to(x.dtype)))
    return out


def _psnr01(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = ((x.float() + 1) / 2 - ((y.float() + 1) / 2).clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


__all__ = ["participation_ratio", "top_component_share", "LatentGeometry", "pc_truncation_psnr", "summary_line",
           "collapsed_groups", "group_slices", "cells", "COLLAPSE_WARN_PR"]
