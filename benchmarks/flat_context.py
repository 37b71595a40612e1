"""Does a flat colour's error depend on what surrounds it? 48 random flat colours at 128², each
reconstructed alone and beside a 128² crop of an open test photo (the image 128×256), and the flat
colour's own tokens decoded beside the photo's tokens. The error is the mean absolute shift of the
centre half's mean colour (levels of 0-255), as in ``score_random_flats``.

    python benchmarks/flat_context.py --models vqct-open-f8 --out benchmarks/results/flat_context

Why: the decoder's GroupNorm takes statistics over the whole image, so a flat image puts it in a regime
that photos never do (the encoder's GroupNorm had that problem, round 5). If that were the flat-colour
error's cause, the shift would shrink beside a photo.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from random_flats import load
from vqct_tokenizer.evaluation.plain_inputs import random_flat_colours


def centre_shift(recon: np.ndarray, rgb: tuple[int, int, int], size: int) -> float:
    lo, hi = size // 4, size - size // 4
    return float(np.abs(recon[lo:hi, lo:hi].reshape(-1, 3).astype(np.float64).mean(0) - np.array(rgb)).mean())


def measure(tok, photo: np.ndarray, count: int) -> dict[str, float]:
    size = photo.shape[0]
    alone, beside, tokens_beside, agreement = [], [], [], []
    photo_tokens = tok.encode(photo, resize=False)                          # (size/8, size/8, 3)
    for rgb in random_flat_colours(count):
        flat = np.full((size, size, 3), rgb, dtype=np.uint8)
        pair = np.concatenate([flat, photo], axis=1)                        # flat left, photo right
        alone.append(centre_shift(tok.reconstruct(flat, resize=False, output_type="np", decode_precision="fp32"), rgb, size))
        beside.append(centre_shift(tok.reconstruct(pair, resize=False, output_type="np", decode_precision="fp32"), rgb, size))
        flat_tokens, pair_tokens = tok.encode(flat, resize=False), tok.encode(pair, resize=False)
        cells = size // 8
        agreement.append((flat_tokens[cells // 4: -cells // 4, cells // 4: -cells // 4]
                          == pair_tokens[cells // 4: -cells // 4, cells // 4: 3 * cells // 4]).float().mean().item())
        decoded = np.asarray(tok.decode(torch.cat([flat_tokens, photo_tokens], dim=1)))
        tokens_beside.append(centre_shift(decoded, rgb, size))
    return {"shift_alone": round(float(np.mean(alone)), 2), "shift_beside_photo": round(float(np.mean(beside)), 2),
            "shift_own_tokens_beside_photo_tokens": round(float(np.mean(tokens_beside)), 2),
            "centre_token_agreement": round(float(np.mean(agreement)), 4), "count": count, "size": size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vqct-open-f8"])
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", "../shared/data")))
    p.add_argument("--photo-index", type=int, default=3, help="which open test photo gives the context")
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = p.parse_args()
    torch.set_num_threads(1)
    listing = args.data_root / "open" / "test.txt"
    name = listing.read_text().split()[args.photo_index]
    photo = np.asarray(Image.open(listing.parent / name).convert("RGB"))[:128, :128]
    results = {"photo": name, "models": {}}
    for model in args.models:
        results["models"][model] = measure(load(model), photo, args.count)
        print(model, results["models"][model], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
