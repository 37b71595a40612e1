"""Encode a batch, decode it, and measure how close the round trip is (PSNR, SSIM).

    python examples/batch_round_trip.py examples/images/*.jpg [--model vqct-faces64]

For a whole test split with all metrics, use `vqct eval`.
"""

from __future__ import annotations

import argparse

import torch

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.defaults import DEFAULT_MODEL
from vqct_tokenizer.evaluation.metrics import psnr, ssim


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+")
    p.add_argument("--model", default=DEFAULT_MODEL)
    args = p.parse_args(argv)

    tok = VQCTTokenizer.from_pretrained(args.model)
    # what the model sees: each image resized and center-cropped as config.json says, in [0, 1]
    inputs, _, _ = tok.preprocess(args.images)
    real = torch.stack(inputs).add(1).div(2)              # (B, 3, R, R)
    tokens = tok.encode(real)                             # (B, h, w, k+1)
    recon = tok.decode(tokens, output_type="pt").cpu()    # (B, 3, R, R) in [0, 1]
    scores = {"psnr": psnr(real, recon).mean().item(), "ssim": ssim(real, recon).mean().item()}
    print(f"{len(args.images)} images, tokens {tuple(tokens.shape)}: "
          f"PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f}")
    return scores


if __name__ == "__main__":
    main()
