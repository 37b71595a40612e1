"""Where a flat colour goes wrong: PSNR by a cell's distance from the image edge.

Round 9 (issue 20). The default gives a flat red back at 33 dB at 64², its training crop size, and at
24 dB at 256². Its tokens are the same there: the centre cell's three words do not change from 128²
on. This benchmark shows where the error lives:

* flat colours (``evaluation/plain_inputs.py`` FLAT_COLOURS) at 64², 128² and 256², reconstructed from
  tokens; PSNR per ring of 8x8 cells at distance 0, 1, 2, ... from the nearest edge;
* the same rings on open test photos at 256², against a bicubic ÷8 thumbnail of each photo (a
  reference of the content's difficulty ring by ring), to see whether photos share the fall;
* ``--oracle``: for some flat colours, the best constant token triple (one round of coordinate
  search over each slot's whole group, decoded as a constant 4x4-cell grid) against the triple the
  encoder picks at the centre of the 256² image: what the decoder and the codebook can express.

    python benchmarks/flat_interiors.py --models vqct-open-f8 --data-root ../shared/data --out benchmarks/results/flat_interiors
    python benchmarks/flat_interiors.py --models vqct-open-f8 --oracle red green blue --out benchmarks/results/flat_oracle

Models are names, exported folders or training runs (their latest checkpoint) as in random_flats.py.
Writes {out}.json and {out}.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_flats import load  # noqa: E402

from vqct_tokenizer.evaluation.plain_inputs import FLAT_COLOURS  # noqa: E402

CELL = 8
MAX_RING = 8  # rings at this distance and beyond are pooled


def ring_of_cells(cells: int) -> np.ndarray:
    """(cells, cells) int: each cell's distance in cells from the nearest edge, capped at MAX_RING."""
    i = np.arange(cells)
    d = np.minimum(i, cells - 1 - i)
    return np.minimum(np.minimum.outer(d, d), MAX_RING)


def ring_mse(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """{ring: mean squared error (of 255) of the pixels in the cells of that ring}; (H, W, 3) arrays."""
    h, w = a.shape[:2]
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=2)
    per_cell = err.reshape(h // CELL, CELL, w // CELL, CELL).mean(axis=(1, 3))
    rings = ring_of_cells(h // CELL)
    return {int(r): float(per_cell[rings == r].mean()) for r in np.unique(rings)}


def psnr(mse: float) -> float:
    return round(10 * math.log10(255.0 ** 2 / mse), 2) if mse > 0 else math.inf


def reconstruct(tok, image: np.ndarray) -> np.ndarray:
    return tok.reconstruct(image, resize=False, output_type="np", decode_precision="fp32")


def flat_profiles(tok, sizes: list[int]) -> dict:
    out = {}
    for name, rgb in FLAT_COLOURS.items():
        out[name] = {}
        for size in sizes:
            image = np.full((size, size, 3), rgb, dtype=np.uint8)
            rec = reconstruct(tok, image)
            whole = float(((image.astype(np.float64) - rec) ** 2).mean())
            out[name][str(size)] = {"psnr": psnr(whole), "rings": {str(r): psnr(m) for r, m in ring_mse(image, rec).items()}}
    return out


def photo_profile(tok, data_root: Path, count: int) -> dict:
    """Ring PSNR of the model and of a bicubic ÷8 thumbnail over ``count`` open test photos at 256²."""
    lines = (data_root / "open" / "test.txt").read_text().split()[:count]
    model, thumb = {}, {}
    for rel in lines:
        im = Image.open(data_root / "open" / rel).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((256, 256), Image.BICUBIC)
        x = np.asarray(im)
        small = im.resize((256 // CELL, 256 // CELL), Image.BICUBIC).resize((256, 256), Image.BICUBIC)
        for acc, y in ((model, reconstruct(tok, x)), (thumb, np.asarray(small))):
            for r, m in ring_mse(x, y).items():
                acc.setdefault(r, []).append(m)
    return {"photos": len(lines),
            "rings": {str(r): {"model": psnr(float(np.mean(model[r]))), "thumbnail": psnr(float(np.mean(thumb[r])))}
                      for r in sorted(model)}}


@torch.no_grad()
def oracle(tok, names: list[str], grid: int = 4) -> dict:
    """{colour: {"encoder": dB, "best": dB, ...}}: the encoder's centre triple and the best constant
    triple found by one round of coordinate search, each decoded as a constant grid x grid-cell image."""
    m, q, codebook = tok.model, tok.model.quantizer, tok.codebook
    slots = [g for g in q.groups for _ in range(g.k)]
    out = {}
    for name in names:
        rgb = FLAT_COLOURS[name]
        x = (torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1).view(1, 3, 1, 1)
        big = x.expand(1, 3, 256, 256).contiguous().to(m.quant_conv.weight.dtype)
        start = q.encode(m.encode_latent(big), codebook)[0, 16, 16]
        target = x.expand(1, 3, grid * CELL, grid * CELL)

        def mse(triples: torch.Tensor) -> torch.Tensor:
            ids = triples.view(-1, 1, 1, triples.shape[-1]).expand(-1, grid, grid, -1)
            errs = []
            for i in range(0, len(ids), 128):
                rec = m.decode_latent(q.lookup(ids[i:i + 128], codebook).to(m.quant_conv.weight.dtype)).float()
                errs.append(((rec.clamp(-1, 1) - target) / 2).pow(2).mean(dim=(1, 2, 3)))
            return torch.cat(errs)

        best, start_err = start.clone(), float(mse(start[None])[0])
        best_err = start_err
        for s, g in enumerate(slots):
            cand = best.repeat(g.code_end - g.code_start, 1)
            cand[:, s] = torch.arange(g.code_start, g.code_end)
            errs = mse(cand)
            j = int(errs.argmin())
            if float(errs[j]) < best_err:
                best_err, best = float(errs[j]), cand[j].clone()
        out[name] = {"encoder": round(-10 * math.log10(start_err), 2), "best": round(-10 * math.log10(best_err), 2),
                     "encoder_ids": start.tolist(), "best_ids": best.tolist(),
                     "encoder_words": [tok.vocab[i] for i in start.tolist()],
                     "best_words": [tok.vocab[i] for i in best.tolist()]}
        print(f"{name}: encoder's triple {out[name]['encoder']} dB, best constant triple {out[name]['best']} dB", flush=True)
    return out


def report(results: dict) -> str:
    lines = ["# Flat interiors: PSNR by a cell's distance from the edge", "",
             "`python benchmarks/flat_interiors.py` (see its docstring). Distance in 8x8 cells from the "
             f"nearest edge; {MAX_RING}+ pools the rest.", ""]
    for model, res in results.items():
        lines.append(f"## {model}")
        if "flats" in res:
            sizes = sorted({int(s) for v in res["flats"].values() for s in v})
            lines += ["", "| colour | " + " | ".join(f"{s}² whole" for s in sizes) + f" | {sizes[-1]}² by distance 0 / 1 / 2 / 3 / 4 / 6 / {MAX_RING}+ |",
                      "|---|" + "---|" * (len(sizes) + 1)]
            for name, per in res["flats"].items():
                last = per[str(sizes[-1])]["rings"]
                prof = " / ".join(f"{last[str(r)]:.1f}" for r in (0, 1, 2, 3, 4, 6, MAX_RING) if str(r) in last)
                lines.append(f"| {name} | " + " | ".join(f"{per[str(s)]['psnr']:.1f}" for s in sizes) + f" | {prof} |")
        if "photos" in res:
            ph = res["photos"]
            lines += ["", f"Open test photos at 256² ({ph['photos']}): model and bicubic ÷8 thumbnail by distance", "",
                      "| distance | model | thumbnail | model − thumbnail |", "|---|---|---|---|"]
            for r, v in ph["rings"].items():
                lines.append(f"| {r}{'+' if int(r) == MAX_RING else ''} | {v['model']:.2f} | {v['thumbnail']:.2f} | {v['model'] - v['thumbnail']:+.2f} |")
        if "oracle" in res:
            lines += ["", "Best constant token triple (one round of coordinate search, a constant 4x4-cell grid):", "",
                      "| colour | encoder's centre triple | best constant triple | words (encoder → best) |", "|---|---|---|---|"]
            for name, v in res["oracle"].items():
                lines.append(f"| {name} | {v['encoder']:.1f} | {v['best']:.1f} | {', '.join(v['encoder_words'])} → {', '.join(v['best_words'])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--data-root", type=Path, default=None, help="with open/test.txt: also the photo profile")
    p.add_argument("--photos", type=int, default=20)
    p.add_argument("--oracle", nargs="*", default=None, help="flat colours to search the best constant triple for")
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        tok = load(name)
        res: dict = {}
        if args.oracle is not None:
            res["oracle"] = oracle(tok, args.oracle or ["red", "green", "blue"])
        else:
            res["flats"] = flat_profiles(tok, args.sizes)
            if args.data_root is not None:
                res["photos"] = photo_profile(tok, args.data_root, args.photos)
        results[name] = res
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    text = report(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
