"""Loss terms of VQGAN/VQCT training."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def quantization_loss(z: torch.Tensor, z_q: torch.Tensor, beta: float,
                      num_groups: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VQ-VAE loss per code group, summed over groups: ||sg[z] - z_q||² (moves the codebook) +
    beta·||z - sg[z_q]||² (commits the encoder), each a mean over the group's D channels.

    Per group the codebook term weighs 1 and the commitment term beta, as in van den Oord et al. and
    the official VQCT code, which sums one VQ loss per half. (A single mean over both halves' 2·D
    channels would halve both.) taming's "legacy" form, which the official code inherits, puts beta on
    the codebook term instead; we use the correct form (docs/METHOD.md).
    ``z`` and ``z_q`` are (B, G·D, h, w) with G = ``num_groups``.
    Returns (total, codebook_term, commitment_term), the two terms already summed over groups.
    """
    codebook = F.mse_loss(z_q.float(), z.detach().float()) * num_groups
    commitment = F.mse_loss(z.float(), z_q.detach().float()) * num_groups
    return codebook + beta * commitment, codebook, commitment


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Forward value of z_q, gradient of identity to z."""
    return z + (z_q.to(z.dtype) - z).detach()


def rotation_trick(z: torch.Tensor, z_q: torch.Tensor, num_groups: int, eps: float = 1e-6) -> torch.Tensor:
    """Forward value of z_q; the gradient reaches z through the rotation and rescaling that map each
    group's latent vector onto its code (Fifty et al. 2024, "Restructuring Vector Quantization with
    the Rotation Trick"), treated as constants: dL/dz = (|q|/|e|) R^T dL/dq.

    With e = z and q = z_q per cell and group, ê, q̂ their unit vectors and r = (ê + q̂)/|ê + q̂|,
    R = I − 2 r rᵀ + 2 q̂ êᵀ rotates ê onto q̂, and (|q|/|e|) R e = q.
    ``z``, ``z_q`` are (B, G·D, h, w). No gradient flows to z_q (the codebook learns from its own loss).
    """
    b, c, h, w = z.shape
    e = z.float().reshape(b, num_groups, c // num_groups, h, w)
    q = z_q.detach().float().reshape(e.shape)
    e_norm = e.detach().norm(dim=2, keepdim=True).clamp_min(eps)
    q_norm = q.norm(dim=2, keepdim=True)
    e_hat, q_hat = e.detach() / e_norm, q / q_norm.clamp_min(eps)
    r = e_hat + q_hat
    r = r / r.norm(dim=2, keepdim=True).clamp_min(eps)
    rotated = e - 2 * (r * e).sum(dim=2, keepdim=True) * r + 2 * (e_hat * e).sum(dim=2, keepdim=True) * q_hat
    return (rotated * (q_norm / e_norm)).reshape(b, c, h, w).to(z.dtype)


def spread_loss(z: torch.Tensor, num_groups: int, floor: float) -> torch.Tensor:
    """Σ over groups of max(0, 1/PR − 1/floor), PR the centred participation ratio of the batch's cells.

    With Σ a group's covariance over the B·h·w cells, PR = tr(Σ)² / tr(Σ²) (1: every cell on one line,
    D: isotropic), so 1/PR = ‖Σ/tr Σ‖²_F is a smooth function of the latents, and the hinge only acts
    on groups bunched onto fewer than ``floor`` directions. Computed from the centred (P, D) cells in
    float32; ``z`` is (B, G·D, h, w) and keeps its gradient (it is the encoder's output).
    """
    b, c, h, w = z.shape
    cells = z.float().reshape(b, num_groups, c // num_groups, h * w).permute(1, 0, 3, 2)
    cells = cells.reshape(num_groups, b * h * w, c // num_groups)          # (G, P, D)
    cells = cells - cells.mean(dim=1, keepdim=True)
    cov = cells.transpose(1, 2) @ cells                                    # (G, D, D), unscaled
    inv_pr = cov.pow(2).sum(dim=(1, 2)) / cov.diagonal(dim1=1, dim2=2).sum(dim=1).pow(2).clamp_min(1e-12)
    return F.relu(inv_pr - 1.0 / floor).sum()


def reconstruction_loss(x: torch.Tensor, rec: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    if kind == "l1":
        return (x - rec).abs().mean()
    if kind == "l2":
        return (x - rec).pow(2).mean()
    raise ValueError(f"recon loss must be 'l1' or 'l2', got {kind!r}")


def lowpass_loss(x: torch.Tensor, rec: torch.Tensor, cell: int,
                 criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``criterion`` between ``cell``×``cell`` average-pooled ``x`` and ``rec`` (B, 3, H, W).

    Why: decoding a flat colour, the round-6 default was off by a uniform shift of about 11 levels
    (0-255) with its unquantized latent too, while a perceptual loss charges little for a shift of
    colour. Pooling keeps only the regions' mean colours, so this charges them again without asking
    for sharper edges. ``ceil_mode`` keeps the ragged border.
    """
    return criterion(F.avg_pool2d(x, cell, ceil_mode=True), F.avg_pool2d(rec, cell, ceil_mode=True))


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """λ = ‖∇_last L_rec‖ / (‖∇_last L_G‖ + 1e-4), clamped to [0, max_weight], no gradient.

    Balances the GAN term against reconstruction at the decoder's last layer (Esser et al. 2021).
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()
