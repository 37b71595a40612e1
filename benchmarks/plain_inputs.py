"""PSNR of plain inputs (flat colours, a gradient, a hue ramp, a checkerboard) reconstructed from
tokens at native size, for each model; and a picture of them.

    python benchmarks/plain_inputs.py --models vqct-open-f8 baseline-open-f8
    python benchmarks/plain_inputs.py --models vqct-open-f8 --refine 20 --out benchmarks/results/plain_inputs_refined

Writes benchmarks/results/plain_inputs.json and plain_inputs.png (inputs in the top row, one row
of reconstructions per model). tests/test_pretrained.py holds the shipped default to these figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.plain_inputs import plain_images, psnr_uint8

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vqct-open-f8", "baseline-open-f8"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS / "plain_inputs")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="tokens refined for N steps against the decoder (encode's refine_steps; default 0)")
    args = p.parse_args()

    images = plain_images(args.size)
    thumb = 96
    rows = [[Image.fromarray(im).resize((thumb, thumb), Image.NEAREST) for im in images.values()]]
    psnr: dict[str, dict[str, float]] = {}
    for name in args.models:
        tok = VQCTTokenizer.from_pretrained(name)
        recons = {k: tok.reconstruct(im, resize=False, output_type="np", decode_precision="fp32",  # as vqct eval
                                     refine_steps=args.refine)
                  for k, im in images.items()}
        psnr[name] = {k: round(psnr_uint8(images[k], r), 2) for k, r in recons.items()}
        rows.append([Image.fromarray(r).resize((thumb, thumb), Image.NEAREST) for r in recons.values()])
        worst = min(psnr[name], key=psnr[name].get)
        print(f"{name}: worst {worst} {psnr[name][worst]:.2f} dB | " + ", ".join(f"{k} {v:.1f}" for k, v in psnr[name].items()))

    sheet = Image.new("RGB", (thumb * len(images), thumb * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * thumb, r * thumb))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps({
        "size": args.size,
        "refine_steps": args.refine,
        "note": (f"PSNR (dB) of native {args.size}x{args.size} reconstructions from tokens of plain inputs "
                 f"(vqct_tokenizer/evaluation/plain_inputs.py); {args.out.name}.png: inputs on top, then one row per "
                 f"model in this order: {', '.join(args.models)}"),
        "psnr": psnr}, indent=2) + "\n")


if __name__ == "__main__":
    main()
