"""Learned-codebook baselines as people build them today, as options of ``codebook.source=learned``.

The plain learned codebook (``transfer.LearnedCodebook``: taming's U(-1/K, 1/K) start, trained by the
codebook loss's gradient) stays the default. These options (``codebook`` section of the training
config) are the usual remedies for codebook collapse:

* ``learned_init="kmeans"``: codes start at k-means centres of the first batch's encoder outputs
  (lucidrains' ``kmeans_init``) instead of near the origin, where a few codes win every latent.
* ``ema_decay=0.99``: codes are exponential moving averages of the encoder outputs assigned to them
  (VQ-VAE appendix, VQ-VAE-2), with Laplace-smoothed cluster sizes. The codes are buffers: the
  codebook loss term has no gradient path to them any more; only the commitment term trains.
* ``restart_dead_after=N``: a code that no latent chose for N steps in a row is re-initialised to a
  random encoder output of the current batch (Dhariwal et al. 2020, Jukebox's codebook restarts).
* ``simvq=true``: SimVQ (Zhu et al. 2024): codebook = C W with C a frozen random Gaussian (K, D) and
  W a learned D x D linear map. A gradient step on W moves every code at once, so none is stranded.
* ``cosine=true`` is not here but in the shared quantizer (``VQCTConfig.normalize_codes``), because
  inference has to do the same: latents and codes are l2-normalised before the nearest-code search.
  A small ``model.codebook_dim`` is the low-dimensional lookup (ViT-VQGAN's factorised codes):
  ``quant_conv`` already projects z_channels -> G·codebook_dim and ``post_quant_conv`` back.

Groups and rows. The quantizer's groups say which latent channels search which codebook rows: a plain
VQGAN is one group (rows [0, K), all channels); the rate-matched VQCT layout is the adjective group
(channels [0, D), rows [0, A), k = 2 nearest, averaged) and the noun group (channels [D, 2D), rows
[A, A+N)). Every upkeep step works per row range, on the latents of the group(s) searching it: k-means
on the adjective rows sees only adjective-slice latents, a dead noun code restarts from a noun-slice
latent. With ``pos=single`` both groups search all rows, so both slices feed the one range. A latent
whose group takes k codes counts once toward each of its k codes.

Distributed training. Assignment counts and sums are all-reduced, so EMA codes follow the global
batch; the latents a k-means start or a restart copies come from rank 0 (broadcast), so every rank
keeps the same codebook. All random draws use torch's global CPU generator, which checkpoints save,
so a resumed run makes the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import CodeGroup, VQCTConfig
from ..models.quantizer import nearest_codes
from .transfer import LearnedCodebook

LEARNED_INITS = ("uniform", "kmeans")
# the ``codebook`` config keys of these options and their "off" values (training/config.py DEFAULTS)
LEARNED_OPTION_DEFAULTS = {"learned_init": "uniform", "ema_decay": 0.0, "restart_dead_after": 0, "simvq": False,
                           "cosine": False}
EMA_EPS = 1e-5      # Laplace smoothing of EMA cluster sizes (sonnet's and taming's value)
KMEANS_ITERS = 10


def build_learned_codebook(cb: dict[str, Any], config: VQCTConfig) -> nn.Module:
    """The learned codebook source the ``codebook`` config section asks for (all options off: taming's)."""
    k, d = config.codebook_size, config.codebook_dim
    if cb.get("simvq", False):
        return SimVQCodebook(k, d)
    init = cb.get("learned_init", "uniform")
    ema, restart = float(cb.get("ema_decay", 0.0)), int(cb.get("restart_dead_after", 0))
    if init == "uniform" and ema == 0.0 and restart == 0:
        return LearnedCodebook(k, d)  # exactly the old codebook: same parameter name, same random draws
    return ManagedCodebook(config.groups, k, d, init=init, ema_decay=ema, restart_dead_after=restart,
                           normalize=config.normalize_codes)


# ---------------------------------------------------------------------------------------- SimVQ
class SimVQCodebook(nn.Module):
    """codebook = C Wᵀ: C (K, D) frozen, drawn N(0, 1/D) as in SimVQ's code (a buffer, saved so export
    and resume see the same C); W (D, D), no bias, the only trainable tensor (nn.Linear's default init)."""

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("random_codes", torch.randn(num_codes, dim) * dim ** -0.5)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self) -> torch.Tensor:
        # float32 whatever the autocast: the nearest-code search must see the codebook export bakes
        with torch.autocast(device_type=self.random_codes.device.type, enabled=False):
            return self.proj(self.random_codes)  # (K, D)


# ------------------------------------------------------------------ k-means, EMA, dead-code restart
@dataclass(frozen=True)
class RowRange:
    """Codebook rows [start, end) and the groups that search them: (group index, first id column, k)."""

    start: int
    end: int
    slots: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        return self.end - self.start


def row_ranges(groups: Sequence[CodeGroup]) -> list[RowRange]:
    """The quantizer's groups as disjoint row ranges (groups sharing rows share a range)."""
    slots: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    col = 0
    for gi, g in enumerate(groups):
        slots.setdefault((g.code_start, g.code_end), []).append((gi, col, g.k))
        col += g.k
    spans = sorted(slots)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"code groups overlap without sharing their rows: {spans}")
    return [RowRange(s, e, tuple(slots[(s, e)])) for s, e in spans]


def kmeans(x: torch.Tensor, k: int, iters: int = KMEANS_ITERS, normalize: bool = False) -> torch.Tensor:
    """Lloyd's k-means of the rows of ``x`` (M, D) -> centres (k, D).

    Seeded by k-means++ (Arthur & Vassilvitskii 2007), so well-separated clusters each get a centre
    instead of two centres splitting one cluster and leaving another empty. With fewer rows than
    centres (a first batch smaller than the codebook) every row seeds a centre and the surplus start
    on random rows plus a little noise, so they can split the clusters they land in; those that still
    end up empty stay there, beside the data, and dead-code restart (if on) moves them later. An empty
    cluster keeps its centre. ``normalize``: spherical k-means (centres re-normalised every
    iteration), for the cosine lookup.
    """
    x = x.float()
    m, d = x.shape
    if m > k:
        centres = x[kmeans_plus_plus(x, k).to(x.device)].clone()
    else:
        # CPU generator throughout: checkpoints save it, so a resumed run draws the same
        seeds = torch.cat([torch.randperm(m), torch.randint(m, (k - m,))])
        centres = x[seeds.to(x.device)].clone()
        centres[m:] += torch.randn(k - m, d).to(x.device) * (0.01 * x.std().clamp_min(1e-6))
    if normalize:
        centres = F.normalize(centres, dim=1)
    for _ in range(iters):
        assign = nearest_codes(x, centres, 1)[:, 0]                    # (M,)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)       # (k,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)      # (k, D)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], centres)
        if normalize:
            centres = F.normalize(centres, dim=1)
    return centres


def kmeans_plus_plus(x: torch.Tensor, k: int) -> torch.Tensor:
    """k row indices (CPU LongTensor) of ``x`` (M, D), M >= k: each next one drawn with probability ∝
    its squared distance to the nearest one drawn so far. Distances stay on x's device; the draws
    come from the CPU generator (checkpointed), by inverse CDF."""
    m = x.shape[0]
    picks = torch.empty(k, dtype=torch.long)
    picks[0] = torch.randint(m, (1,))
    d2 = (x - x[picks[0]]).pow(2).sum(1)  # (M,) squared distance to the nearest pick
    for i in range(1, k):
        cum = d2.cumsum(0)  # (M,)
        if cum[-1] > 0:
            target = torch.rand(1).to(x.device) * cum[-1]
            # first row whose cumulative weight exceeds the target: rows of weight 0 are never drawn
            picks[i] = torch.searchsorted(cum, target, right=True).clamp_max(m - 1).item()
        else:  # every row duplicates a pick: any row not picked yet
            free = torch.ones(m).index_fill_(0, picks[:i], 0.0)
            picks[i] = torch.multinomial(free, 1).item()
        d2 = torch.minimum(d2, (x - x[picks[i]]).pow(2).sum(1))
    return picks


class ManagedCodebook(nn.Module):
    """A learned (K, D) codebook with k-means start, EMA updates and/or dead-code restarts.

    ``weight`` is an ``nn.Parameter`` trained by the codebook loss, or, with ``ema_decay > 0``, a
    buffer that only ``after_step`` writes. Everything the upkeep remembers (EMA statistics, steps
    since each code was last chosen, whether k-means has run) is a buffer, so checkpoints carry it.
    """

    def __init__(self, groups: Sequence[CodeGroup], num_codes: int, dim: int, init: str = "uniform",
                 ema_decay: float = 0.0, restart_dead_after: int = 0, normalize: bool = False) -> None:
        super().__init__()
        if init not in LEARNED_INITS:
            raise ValueError(f"learned_init must be one of {LEARNED_INITS}, got {init!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if restart_dead_after < 0:
            raise ValueError(f"restart_dead_after must be >= 0, got {restart_dead_after}")
        self.ranges = row_ranges(groups)
        if self.ranges[-1].end > num_codes:
            raise ValueError(f"code groups need {self.ranges[-1].end} rows, the codebook has {num_codes}")
        self.dim, self.init = dim, init
        self.ema_decay, self.restart_dead_after, self.normalize = ema_decay, restart_dead_after, normalize
        weight = torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)  # taming's start
        if ema_decay > 0:
            self.register_buffer("weight", weight)
            # EMA statistics: each code starts as a cluster of one member, itself, so weight =
            # embed_sum / cluster_size holds from the start and an unused code decays towards the
            # origin slowly instead of being divided by ~0 (which a zero start would do)
            self.register_buffer("cluster_size", torch.ones(num_codes))  # (K,)
            self.register_buffer("embed_sum", weight.clone())           # (K, D)
        else:
            self.weight = nn.Parameter(weight)
        if restart_dead_after:
            self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))  # (K,)
        if init == "kmeans":
            self.register_buffer("initialized", torch.tensor(False))
        self._init_seen = False

    def forward(self) -> torch.Tensor:
        return self.weight  # (K, D)

    @property
    def pending_init(self) -> bool:
        """True until the k-means start has run (the model's forward runs it on the first batch)."""
        if self.init != "kmeans" or self._init_seen:
            return False
        self._init_seen = bool(self.initialized)  # cached once True: no device sync every step after
        return not self._init_seen

    @torch.no_grad()
    def init_from_latents(self, z: torch.Tensor) -> None:
        """k-means start from encoder outputs z (B, G·D, h, w): each row range from its groups' slices."""
        flat = _flat(z)
        for r in self.ranges:
            centres = kmeans(self._range_latents(flat, r), r.size, normalize=self.normalize)  # (size, D)
            _broadcast(centres)
            self.weight[r.start:r.end] = centres.to(self.weight.dtype)
        if self.ema_decay:
            self.embed_sum.copy_(self.weight)
            self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def after_step(self, z: torch.Tensor, ids: torch.Tensor) -> None:
        """Codebook upkeep after a training step: EMA update and dead-code restart.

        z (B, G·D, h, w): the latents this step quantized (unit-norm per group under the cosine
        lookup); ids (B, h, w, Σk): the codes they chose.
        """
        if not (self.ema_decay or self.restart_dead_after):
            return
        flat = _flat(z)                          # (P, G·D), P = B·h·w
        ids = ids.reshape(flat.shape[0], -1)     # (P, Σk), same cell order as flat
        d = self.dim
        for r in self.ranges:
            # every (latent, chosen code) pair of the groups searching this range
            rows = torch.cat([ids[:, col:col + k].reshape(-1) for _, col, k in r.slots]) - r.start  # (P·Σk_r,)
            counts = _all_reduce_sum(torch.bincount(rows, minlength=r.size).float())          # (size,)
            if self.ema_decay:
                vecs = torch.cat([flat[:, gi * d:(gi + 1) * d].repeat_interleave(k, dim=0)
                                  for gi, _, k in r.slots])                                    # (P·Σk_r, D)
                sums = _all_reduce_sum(torch.zeros(r.size, d, device=flat.device).index_add_(0, rows, vecs))
                self._ema_update(r, counts, sums)
            if self.restart_dead_after:
                self._restart_dead(r, counts, self._range_latents(flat, r))

    def _ema_update(self, r: RowRange, counts: torch.Tensor, sums: torch.Tensor) -> None:
        decay = self.ema_decay
        size = self.cluster_size[r.start:r.end]  # views: updated in place
        total = self.embed_sum[r.start:r.end]
        size.mul_(decay).add_(counts, alpha=1.0 - decay)
        total.mul_(decay).add_(sums, alpha=1.0 - decay)
        # Laplace smoothing: no cluster size reaches 0 (no division by ~0), and they still sum to n
        n = size.sum()
        smoothed = (size + EMA_EPS) / (n + r.size * EMA_EPS) * n
        self.weight[r.start:r.end] = total / smoothed[:, None]

    def _restart_dead(self, r: RowRange, counts: torch.Tensor, latents: torch.Tensor) -> None:
        unused = self.unused_steps[r.start:r.end]  # view
        unused.add_(1).masked_fill_(counts > 0, 0)
        dead = (unused >= self.restart_dead_after).nonzero().squeeze(1)  # (n_dead,), same on every rank
        if dead.numel() == 0:
            return
        m = latents.shape[0]
        pick = torch.randperm(m)[:dead.numel()] if dead.numel() <= m else torch.randint(m, (dead.numel(),))
        new = latents[pick.to(latents.device)].clone()  # (n_dead, D): distinct latents when there are enough
        _broadcast(new)
        rows = dead + r.start
        self.weight[rows] = new.to(self.weight.dtype)
        if self.ema_decay:  # the restarted code is a fresh cluster of one member, the latent it copies
            self.embed_sum[rows] = new
            self.cluster_size[rows] = 1.0
        self.unused_steps[rows] = 0

    def _range_latents(self, flat: torch.Tensor, r: RowRange) -> torch.Tensor:
        """(P, G·D) -> (P·n, D): the channel slices of the n groups searching this range, stacked."""
        return torch.cat([flat[:, gi * self.dim:(gi + 1) * self.dim] for gi, _, _ in r.slots])

    def extra_repr(self) -> str:
        return (f"codes={self.weight.shape[0]}, dim={self.dim}, init={self.init}, ema_decay={self.ema_decay}, "
                f"restart_dead_after={self.restart_dead_after}")


def _flat(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B·h·w, C) float32, cells in the quantizer's order."""
    return z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: torch.Tensor) -> None:
    if _distributed():
        dist.broadcast(t, 0)


__all__ = ["build_learned_codebook", "SimVQCodebook", "ManagedCodebook", "RowRange", "row_ranges", "kmeans",
           "kmeans_plus_plus", "LEARNED_INITS", "LEARNED_OPTION_DEFAULTS", "EMA_EPS"]
