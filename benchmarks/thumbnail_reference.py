"""The tokenizer against a bicubic ÷8 thumbnail: 3 numbers per 8×8 cell, no learning.

Issue 20's reference: a tokenizer whose cells carry real information must beat a thumbnail with one
RGB value per cell. Each photo's centre 256² crop is shrunk to 32² (bicubic, Pillow) and enlarged back,
and reconstructed from the model's tokens at native size; PSNR on 8-bit images, mean over photos.

    python benchmarks/thumbnail_reference.py --models vqct-open-f8 baseline-open-f8 --photos 20

Writes benchmarks/results/thumbnail_reference.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.plain_inputs import psnr_uint8

ROOT = Path(__file__).resolve().parents[1]


def centre_crop(path: Path, size: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    if min(w, h) < size:
        raise ValueError(f"{path}: {w}x{h} is smaller than the {size}² crop")
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def thumbnail(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((w // factor, h // factor), Image.BICUBIC)
    return np.asarray(small.resize((w, h), Image.BICUBIC))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vqct-open-f8", "baseline-open-f8"])
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", "../shared/data")))
    p.add_argument("--photos", type=int, default=20)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "thumbnail_reference.json")
    args = p.parse_args()

    listing = args.data_root / "open" / "test.txt"
    paths = [listing.parent / line for line in listing.read_text().split()[: args.photos]]
    images = [centre_crop(path, args.size) for path in paths]
    scores = {"bicubic ÷8 thumbnail": [psnr_uint8(im, thumbnail(im, 8)) for im in images]}
    for name in args.models:
        tok = VQCTTokenizer.from_pretrained(name)
        scores[name] = [psnr_uint8(im, tok.reconstruct(im, resize=False, output_type="np", decode_precision="fp32"))
                        for im in tqdm(images, desc=name)]
    result = {"photos": len(images), "size": args.size, "data": "open/test.txt (first photos)",
              "mean_psnr": {k: round(float(np.mean(v)), 3) for k, v in scores.items()},
              "per_photo": {k: [round(float(x), 2) for x in v] for k, v in scores.items()},
              "torch": torch.__version__}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for k, v in result["mean_psnr"].items():
        print(f"{k:24s} {v:6.2f} dB")


if __name__ == "__main__":
    main()
