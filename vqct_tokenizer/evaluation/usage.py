"""Codebook usage and rate of token grids: over a whole evaluation set (``CodeUsage``), and over the
last steps of a training run (``UsageWindow``, logged to metrics.jsonl). Both count with
``group_counts`` and measure with ``perplexity``.

Works for every quantizer through ``VQCTConfig.groups``: the VQCT quantizer (``adjective`` group
with k ids per cell, ``noun`` group with one), its shared-codebook ablation (both groups over all
A+N rows) and a plain VQGAN (one ``code`` group).

Rate, per image of ``cells`` grid cells:

* ``tokens_per_image`` = cells × Σ_g k_g.
* ``bits_per_image`` (the figure we quote) = cells × Σ_g log2 C(|g|, k_g): a group's k ids are k
  *distinct* codes whose order carries no information for the decoder (it averages them), so the
  group sends an unordered set of k out of |g| codes. For k = 1 this is log2 |g|.
* ``bits_per_image_ordered`` = cells × Σ_g k_g · log2 |g|: each id sent on its own.
* ``entropy_bits_per_image_marginal`` = cells × Σ_g k_g · H_g, with H_g the empirical entropy
  (bits) of the group's ids pooled over its k slots on the evaluation set.
* ``entropy_bits_per_image_joint`` = cells × H_cell, with H_cell the empirical entropy of whole cell
  tokens (the tuple of a cell's ids, ordered as emitted). A plug-in estimate: with few cells
  relative to the number of distinct tuples it is biased low.

Distinct cell tokens are counted as ordered tuples, exactly as the tokenizer emits them (adjectives
nearest first), so (a, b, n) and (b, a, n) are two tokens; the count with each group's ids sorted
(unordered sets) is reported beside it.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

import torch

from ..config import CodeGroup, VQCTConfig


def entropy_bits(counts: torch.Tensor | list[int]) -> float:
    """Shannon entropy (bits) of the empirical distribution given by non-negative counts."""
    c = torch.as_tensor(counts, dtype=torch.float64)
    c = c[c > 0]
    if c.numel() == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * torch.log2(p)).sum())


def perplexity(counts: torch.Tensor | list[int]) -> float:
    """exp of the entropy (in nats) = 2 ** (entropy in bits): the effective number of codes used."""
    return 2.0 ** entropy_bits(counts)


def group_bits(group: CodeGroup, ordered: bool) -> float:
    """Bits one cell spends on a group: k·log2|g| (ordered ids) or log2 C(|g|, k) (unordered set)."""
    if ordered:
        return group.k * math.log2(group.size)
    return math.log2(math.comb(group.size, group.k))


def cell_bits(groups: tuple[CodeGroup, ...], ordered: bool = False) -> float:
    return sum(group_bits(g, ordered) for g in groups)


def group_counts(groups: tuple[CodeGroup, ...], flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """How often each code of each group occurs in ``flat``, cells of ids (N, Σk) as emitted."""
    counts, col = {}, 0
    for g in groups:
        ids = flat[:, col:col + g.k].reshape(-1).long() - g.code_start
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= g.size):
            raise ValueError(f"{g.name} ids outside [{g.code_start}, {g.code_end})")
        counts[g.name] = torch.bincount(ids, minlength=g.size)
        col += g.k
    return counts


class CodeUsage:
    """Streaming counter of codes and cell tokens; ``update`` per batch, ``summary`` at the end.

    Memory: one count per codebook row, plus one entry per *distinct* cell token seen (bounded by
    the number of possible tuples, not by the number of images).
    """

    def __init__(self, config: VQCTConfig) -> None:
        self.groups = config.groups
        self.counts = {g.name: torch.zeros(g.size, dtype=torch.int64) for g in self.groups}
        self.cell_tokens: Counter[tuple[int, ...]] = Counter()
        self.images = 0
        self.cells = 0

    @property
    def tokens_per_cell(self) -> int:
        return sum(g.k for g in self.groups)

    def update(self, tokens: torch.Tensor) -> None:
        """Count a batch of token grids (B, h, w, Σk) or one grid (h, w, Σk)."""
        if tokens.ndim == 3:
            tokens = tokens[None]
        if tokens.ndim != 4 or tokens.shape[-1] != self.tokens_per_cell:
            raise ValueError(f"expected token grids (B, h, w, {self.tokens_per_cell}), got {tuple(tokens.shape)}")
        flat = tokens.detach().cpu().long().reshape(-1, tokens.shape[-1])
        for name, counts in group_counts(self.groups, flat).items():
            self.counts[name] += counts
        rows, row_counts = torch.unique(flat, dim=0, return_counts=True)
        self.cell_tokens.update(dict(zip(map(tuple, rows.tolist()), row_counts.tolist())))
        self.images += tokens.shape[0]
        self.cells += flat.shape[0]

    # ------------------------------------------------------------------ results
    def _unordered_distinct(self) -> int:
        seen: set[tuple[int, ...]] = set()
        for cell in self.cell_tokens:
            key: list[int] = []
            col = 0
            for g in self.groups:
                key.extend(sorted(cell[col:col + g.k]))
                col += g.k
            seen.add(tuple(key))
        return len(seen)

    def summary(self) -> dict[str, Any]:
        """Usage per group, distinct cell tokens and their perplexities (JSON-ready)."""
        groups = {}
        for g in self.groups:
            c = self.counts[g.name]
            used = int((c > 0).sum())
            groups[g.name] = {
                "size": g.size, "ids_per_cell": g.k, "code_range": [g.code_start, g.code_end],
                "used": used, "used_percent": 100.0 * used / g.size,
                "perplexity": perplexity(c), "entropy_bits": entropy_bits(c),
            }
        return {
            "groups": groups,
            "distinct_cell_tokens": len(self.cell_tokens),
            "distinct_cell_tokens_unordered": self._unordered_distinct(),
            "cell_token_perplexity": perplexity(list(self.cell_tokens.values())),
            "cells": self.cells,
            "counting": "over the whole evaluation set; a cell token is the tuple of the cell's ids as "
                        "emitted (adjectives nearest first); the _unordered count sorts each group's ids",
        }

    def rate(self) -> dict[str, Any]:
        """Tokens and bits per image (see module docstring for the formulas)."""
        cells = self.cells / self.images if self.images else 0.0
        per_cell = cell_bits(self.groups, ordered=False)
        per_cell_ordered = cell_bits(self.groups, ordered=True)
        marginal = sum(g.k * entropy_bits(self.counts[g.name]) for g in self.groups)
        joint = entropy_bits(list(self.cell_tokens.values()))
        return {
            "cells_per_image": cells,
            "tokens_per_image": cells * self.tokens_per_cell,
            "bits_per_image": cells * per_cell,
            "bits_per_image_ordered": cells * per_cell_ordered,
            "bits_per_cell": per_cell,
            "bits_per_cell_ordered": per_cell_ordered,
            "entropy_bits_per_image_marginal": cells * marginal,
            "entropy_bits_per_image_joint": cells * joint,
            "formula": "bits_per_image = cells * sum_g log2(C(size_g, k_g)) (a group's k ids pooled as an "
                       "unordered set of distinct codes); bits_per_image_ordered = cells * sum_g k_g*log2(size_g); "
                       "entropy_marginal = cells * sum_g k_g*H(ids of g); entropy_joint = cells * H(cell tuples), "
                       "plug-in estimates on the evaluation set",
        }


class UsageWindow:
    """Fraction of each group's codes used, and perplexity, over the last ``window`` training steps."""

    def __init__(self, config: VQCTConfig, window: int) -> None:
        self.groups = config.groups
        self.history: deque[torch.Tensor] = deque(maxlen=max(1, window))

    def update(self, ids: torch.Tensor) -> None:
        """Add one step's ids, (..., Σk)."""
        self.history.append(ids.detach().reshape(-1, ids.shape[-1]).cpu())

    def summary(self) -> dict[str, float]:
        """``usage_<group>`` (share of its codes seen) and ``perplexity_<group>``; {} before any step."""
        if not self.history:
            return {}
        out: dict[str, float] = {}
        for name, counts in group_counts(self.groups, torch.cat(list(self.history))).items():
            out[f"usage_{name}"] = (counts > 0).double().mean().item()
            out[f"perplexity_{name}"] = perplexity(counts)
        return out
