"""Encode-time refinement: fit one image's tokens to the frozen decoder.

The encoder is amortized: one forward pass guesses every image's latent. With the decoder and the
codebook fixed, better token grids for a given image often exist (docs/BENCHMARKS.md "Encode-time
refinement"). ``refine_ids`` searches for one by gradient descent on the pre-quantization latent:

    z  <- the encoder's latent
    repeat n times:
        ids = nearest codes of z                 (the quantizer, exactly as ``encode`` does it)
        y   = decoder(lookup(ids))               (the reconstruction those tokens give)
        keep ids if ||y - x||² is the image's best so far, and, per block of 4x4 cells, the ids of
            the grid whose reconstruction had the lowest error in that block so far
        z  <- z - Adam step of ||y - x||², passed back to z straight through the quantizer,
              the step size falling from lr towards lr/10 on a half cosine
    decode the grid stitched from the best blocks once; return it if it beats the best whole grid

Every grid returned has been decoded and scored, and the first grid scored is the encoder's own, so
refinement never returns tokens that reconstruct the image worse (in mean squared error) than
plain ``encode``. It optimises MSE, i.e. PSNR: the other metrics follow it only as far as
docs/BENCHMARKS.md measured. Each step costs one decoder forward and backward pass at the image's
size, so it is for when quality matters more than time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .models import VQAutoencoder

# The step size starts at DEFAULT_REFINE_LR and falls to a tenth of it on a half cosine; grids are
# stitched from blocks of DEFAULT_REFINE_BLOCK x DEFAULT_REFINE_BLOCK cells. Round 13, on 6 open test
# photos at 256² (runs/r13/refine_schedule.py): +0.59 / +0.79 / +1.00 dB at 5 / 10 / 20 steps, against
# +0.51 / +0.66 / +0.81 for round 12's constant 0.01 keeping the best whole grid.
DEFAULT_REFINE_LR = 0.02
DEFAULT_REFINE_BLOCK = 4


def check_refine_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"refine_steps must be an integer >= 0 (0 = the encoder's tokens), got {steps!r}")
    return steps


def _steps(steps: int, progress: bool):
    if not progress:
        return range(steps)
    from tqdm.auto import tqdm  # huggingface-hub's dependency; only needed for a progress bar

    return tqdm(range(steps), desc="refine", unit="step", leave=False)


def refine_ids(model: VQAutoencoder, codebook: torch.Tensor, x: torch.Tensor, steps: int, *,
               lr: float = DEFAULT_REFINE_LR, block: int | None = DEFAULT_REFINE_BLOCK,
               progress: bool = False) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> LongTensor (B, H/f, W/f, Σk): the best token grid found per image.

    ``steps`` counts the grids scored along the search, the encoder's included: 1 returns the
    encoder's tokens. ``lr`` is the first step size (later ones fall towards lr/10). ``block``: the side, in
    cells, of the blocks a grid is stitched from (None: keep the best whole grid only); the stitched
    grid costs one more decoder forward pass and is returned only where it beats the best whole grid.
    The model's weights are not changed and get no gradient.
    """
    check_refine_steps(steps)
    # callers may be in inference mode (``VQCTTokenizer.encode`` is): leave it, and clone the input,
    # since inference tensors cannot enter a graph
    with torch.inference_mode(False), torch.no_grad():
        x = x.clone()
        z0 = model.encode_latent(x)
        ids = model.quantizer.encode(z0, codebook)
    if steps <= 1:
        return ids
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block must be a positive number of cells or None, got {block!r}")
    with torch.inference_mode(False):
        return _search(model, codebook, x, z0, ids.clone(), steps, lr, block, progress)


def _step_size(lr: float, move: int, steps: int) -> float:
    """The size of move 0 .. steps-2 (after grid ``move`` is scored): lr first, then falling on a half
    cosine that would reach lr/10 one move after the last."""
    return lr / 10 + (lr - lr / 10) * 0.5 * (1 + math.cos(math.pi * move / (steps - 1)))


def _search(model: VQAutoencoder, codebook: torch.Tensor, x: torch.Tensor, z0: torch.Tensor,
            best_ids: torch.Tensor, steps: int, lr: float, block: int | None, progress: bool) -> torch.Tensor:
    quantizer = model.quantizer
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        latent = z0.float().clone().requires_grad_(True)
        opt = torch.optim.Adam([latent], lr=lr)
        best_err = torch.full((x.shape[0],), float("inf"), device=x.device)
        stitched, block_err = best_ids.clone(), None  # (B, h, w, slots); (B, h/block, w/block)
        dtype = next(model.post_quant_conv.parameters()).dtype
        f = x.shape[-1] // best_ids.shape[2]  # pixels per cell
        for step in _steps(steps, progress):
            with torch.enable_grad():
                z = quantizer.normalize_latent(latent)
                ids = quantizer.encode(z.detach(), codebook)
                z_q = quantizer.lookup(ids, codebook).float()
                passed = z + (z_q - z).detach()  # value z_q, gradient to z (straight-through)
                y = model.decode_latent(passed.to(dtype)).float()
                sq = (y - x.float()).pow(2)
                err = sq.flatten(1).mean(1)  # (B,) the grid's own MSE
                better = err.detach() < best_err
                if better.any():
                    best_err = torch.where(better, err.detach(), best_err)
                    best_ids[better] = ids[better]
                if block is not None:
                    block_err = _stitch(stitched, block_err, ids, sq.detach(), block, f)
                opt.zero_grad(set_to_none=True)
                if step == steps - 1:
                    break  # the last grid is scored; a step after it would never be
                err.sum().backward()  # a sum: each image's step does not depend on the batch
            for group in opt.param_groups:
                group["lr"] = _step_size(lr, step, steps)
            opt.step()
        if block is not None:
            with torch.no_grad():
                y = model.decode_latent(quantizer.lookup(stitched, codebook).to(dtype)).float()
                err = (y - x.float()).pow(2).flatten(1).mean(1)
            better = err < best_err
            best_ids[better] = stitched[better]
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return best_ids


def _stitch(stitched: torch.Tensor, block_err: torch.Tensor | None, ids: torch.Tensor, sq: torch.Tensor,
            block: int, f: int) -> torch.Tensor:
    """Take ``ids`` into ``stitched`` (in place) in every block of cells where this grid's error is the
    lowest so far; return the blocks' lowest errors. sq: (B, 3, H, W) squared errors of this grid."""
    # (B, h/block, w/block) mean error per block; a partial block at the edge averages what it holds
    err = F.avg_pool2d(sq.mean(1, keepdim=True), f * block, ceil_mode=True)[:, 0]
    if block_err is None:
        return err  # the first grid, already in ``stitched``
    h, w = ids.shape[1:3]
    take = err < block_err
    cells = take.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]  # (B, h, w)
    stitched[cells] = ids[cells]
    return torch.minimum(err, block_err)
