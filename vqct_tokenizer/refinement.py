"""Encode-time refinement: fit one image's tokens to the frozen decoder.

The encoder is amortized: one forward pass guesses every image's latent. With the decoder and the
codebook fixed, better token grids for a given image often exist (docs/BENCHMARKS.md "Encode-time
refinement"). ``refine_ids`` searches for one by gradient descent on the pre-quantization latent:

    z  <- the encoder's latent
    repeat n times:
        ids = nearest codes of z                 (the quantizer, exactly as ``encode`` does it)
        y   = decoder(lookup(ids))               (the reconstruction those tokens give)
        keep ids if ||y - x||² is the image's best so far
        z  <- z - Adam step of ||y - x||², passed back to z straight through the quantizer

The first grid scored is the encoder's own, so refinement never returns tokens that reconstruct the
image worse (in mean squared error) than plain ``encode``. It optimises MSE, i.e. PSNR: the other
metrics follow it only as far as docs/BENCHMARKS.md measured. Each step costs one decoder forward
and backward pass at the image's size, so it is for when quality matters more than time.
"""

from __future__ import annotations

import torch

from .models import VQAutoencoder

DEFAULT_REFINE_LR = 0.01  # of 0.01, 0.03, 0.1 the best on open test photos at 5-40 steps (round 12)


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
               lr: float = DEFAULT_REFINE_LR, progress: bool = False) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> LongTensor (B, H/f, W/f, Σk): the best of ``steps`` token grids per image.

    ``steps`` counts the grids scored, the encoder's included: 1 returns the encoder's tokens.
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
    with torch.inference_mode(False):
        return _search(model, codebook, x, z0, ids.clone(), steps, lr, progress)


def _search(model: VQAutoencoder, codebook: torch.Tensor, x: torch.Tensor, z0: torch.Tensor,
            best_ids: torch.Tensor, steps: int, lr: float, progress: bool) -> torch.Tensor:
    quantizer = model.quantizer
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        latent = z0.float().clone().requires_grad_(True)
        opt = torch.optim.Adam([latent], lr=lr)
        best_err = torch.full((x.shape[0],), float("inf"), device=x.device)
        dtype = next(model.post_quant_conv.parameters()).dtype
        for step in _steps(steps, progress):
            with torch.enable_grad():
                z = quantizer.normalize_latent(latent)
                ids = quantizer.encode(z.detach(), codebook)
                z_q = quantizer.lookup(ids, codebook).float()
                passed = z + (z_q - z).detach()  # value z_q, gradient to z (straight-through)
                y = model.decode_latent(passed.to(dtype)).float()
                err = (y - x.float()).pow(2).flatten(1).mean(1)  # (B,) the grid's own MSE
                better = err.detach() < best_err
                if better.any():
                    best_err = torch.where(better, err.detach(), best_err)
                    best_ids[better] = ids[better]
                opt.zero_grad(set_to_none=True)
                if step == steps - 1:
                    break  # the last grid is scored; a step after it would never be
                err.sum().backward()  # a sum: each image's step does not depend on the batch
            opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return best_ids
