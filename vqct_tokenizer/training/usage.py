"""Training-time diagnostics: codebook usage over a sliding window, and reconstruction grids."""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import torch
from PIL import Image

from ..config import VQCTConfig


class UsageWindow:
    """Fraction of each group's codes used, and perplexity, over the last ``window`` steps."""

    def __init__(self, config: VQCTConfig, window: int) -> None:
        self.config = config
        self.history: deque[torch.Tensor] = deque(maxlen=max(1, window))

    def update(self, ids: torch.Tensor) -> None:
        self.history.append(ids.detach().reshape(-1, ids.shape[-1]).cpu())

    def summary(self) -> dict[str, float]:
        if not self.history:
            return {}
        ids = torch.cat(list(self.history))
        out: dict[str, float] = {}
        col = 0
        for g in self.config.groups:
            part = ids[:, col:col + g.k].reshape(-1) - g.code_start
            counts = torch.bincount(part, minlength=g.size).double()
            p = counts / counts.sum()
            entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
            out[f"usage_{g.name}"] = (counts > 0).double().mean().item()
            out[f"perplexity_{g.name}"] = math.exp(entropy)
            col += g.k
        return out


def save_reconstruction_grid(x: torch.Tensor, rec: torch.Tensor, path: Path, n: int = 8) -> None:
    """Originals in the top row, reconstructions below; inputs in [-1, 1]."""
    x, rec = x[:n].float().cpu(), rec[:n].float().cpu()
    grid = torch.cat([torch.cat(list(x), dim=2), torch.cat(list(rec), dim=2)], dim=1)  # (3, 2H, nW)
    arr = grid.add(1).mul(127.5).clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
