"""Does a tokenizer encode the same content alike at every image size?

A fully convolutional encoder should: each cell sees only its receptive field. GroupNorm breaks
that, because its statistics span the whole image, and an encoder trained on 64² crops then meets
other statistics on a 256² photo. This script measures the effect on each model given:

* flat colours encoded and decoded at 64², 128², 256² and 512² (PSNR from tokens);
* "64² tokens, tiled": the centre cell's tokens of the 64² encoding repeated over a 32×32 grid
  and decoded at 256², which separates the encoder's part from the decoder's;
* open test photos (centre 256² crops): encoded whole, against encoded in independent 64² and
  128² tiles (decoded whole in every case).

    python benchmarks/size_dependence.py --models vqct-open-f8 runs/new-export --tag r5

Writes benchmarks/results/size_dependence[_TAG].{json,md}.
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
from vqct_tokenizer.evaluation.evaluate import list_images
from vqct_tokenizer.evaluation.plain_inputs import FLAT_COLOURS, psnr_uint8

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SIZES = (64, 128, 256, 512)
COLOURS = ("black", "white", "grey", "red", "green", "blue", "magenta")


def _ids(tok: VQCTTokenizer, image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(tok.encode(np.ascontiguousarray(image), resize=False, precision="fp32")))


def _decode(tok: VQCTTokenizer, ids: torch.Tensor) -> np.ndarray:
    return tok.decode(ids, output_type="np", precision="fp32")


def flat_colours(tok: VQCTTokenizer) -> dict[str, dict[str, float]]:
    out = {}
    for name in COLOURS:
        row = {}
        for size in SIZES:
            image = np.full((size, size, 3), FLAT_COLOURS[name], np.uint8)
            row[str(size)] = round(psnr_uint8(image, _decode(tok, _ids(tok, image))), 2)
        centre = _ids(tok, np.full((64, 64, 3), FLAT_COLOURS[name], np.uint8))[4, 4]
        image = np.full((256, 256, 3), FLAT_COLOURS[name], np.uint8)
        row["64 tokens tiled to 256"] = round(psnr_uint8(image, _decode(tok, centre.expand(32, 32, -1).clone())), 2)
        out[name] = row
    return out


def tiled_photos(tok: VQCTTokenizer, photos: list[np.ndarray]) -> dict[str, float]:
    scores: dict[str, list[float]] = {"whole": [], "64² tiles": [], "128² tiles": []}
    f = tok.downsample_factor
    for image in photos:
        whole = _ids(tok, image)
        scores["whole"].append(psnr_uint8(image, _decode(tok, whole)))
        for tile in (64, 128):
            ids = torch.zeros_like(whole)
            for top in range(0, image.shape[0], tile):
                for left in range(0, image.shape[1], tile):
                    ids[top // f:(top + tile) // f, left // f:(left + tile) // f] = _ids(
                        tok, image[top:top + tile, left:left + tile])
            scores[f"{tile}² tiles"].append(psnr_uint8(image, _decode(tok, ids)))
    return {k: round(float(np.mean(v)), 2) for k, v in scores.items()}


def centre_crops(test: Path, count: int, size: int = 256) -> list[np.ndarray]:
    out = []
    for path in list_images(test, count, stride=10):
        image = np.asarray(Image.open(path).convert("RGB"))
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        out.append(np.ascontiguousarray(image[top:top + size, left:left + size]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vqct-open-f8"], help="shipped model names or exported folders")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", "../shared/data")))
    p.add_argument("--photos", type=int, default=20, help="open test photos (every 10th), centre 256² crops")
    p.add_argument("--tag", default="", help="suffix of the output files")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    photos = centre_crops(args.data_root / "open" / "test.txt", args.photos)
    results = {}
    for name in tqdm(args.models, desc="models"):
        tok = VQCTTokenizer.from_pretrained(name, local_files_only=True)
        results[name] = {"encoder_norm": tok.config.encoder_norm, "flat": flat_colours(tok),
                         "photos_256": tiled_photos(tok, photos)}
    stem = RESULTS / f"size_dependence{'_' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps({"photos": len(photos), "models": results}, indent=1) + "\n")
    lines = [f"# Size dependence ({len(photos)} open test photos, centre 256² crops; PSNR in dB)", ""]
    for name, r in results.items():
        lines += [f"## {name} (encoder_norm={r['encoder_norm']})", "",
                  "| flat colour | " + " | ".join(f"{s}²" for s in SIZES) + " | 64² tokens tiled to 256² |",
                  "|---" * (len(SIZES) + 2) + "|"]
        lines += [f"| {c} | " + " | ".join(f"{v:.1f}" for v in row.values()) + " |" for c, row in r["flat"].items()]
        lines += ["", "| photos encoded | " + " | ".join(r["photos_256"]) + " |", "|---" * 4 + "|",
                  "| PSNR | " + " | ".join(f"{v:.2f}" for v in r["photos_256"].values()) + " |", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
