"""Side-by-side figures of training checkpoints (or shipped models), as the collapse probes measure them,
plus flats at two sizes and the fall of a flat's PSNR away from the image edge.

Round 9 compared two continuations of the round-8 default, run side by side from the same start with
the same schedule and data order, one with extra large-plain batches (data.large_plain_every):

    python benchmarks/checkpoint_compare.py --data-root ../shared/data \\
        --models r8=vqct-open-f8 control@2000=runs/r9/default-plain2/ckpt_00002000.pt \\
                 large-plain@2000=runs/r9/default-largeplain/ckpt_00002000.pt \\
        --out benchmarks/results/large_plain_probe

For each: PSNR / SSIM on the first 50 open test photos at 256² (``vqct eval``'s meters), usage and
latent PR per group, the top-2-PC cut, the 13 plain inputs at 256², 48 random flat colours at 128²
and at 256² (median / p10 / min / shift), and the 256² flats' PSNR at the edge cells against the
interior (``flat_interiors.py``). Measurements are cached in {out}.json by label and path, so the
command can be rerun with more models. Writes {out}.json and {out}.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collapse_probes import measure_tokenizer  # noqa: E402
from flat_interiors import MAX_RING, reconstruct, ring_mse, psnr  # noqa: E402
from random_flats import load  # noqa: E402

from vqct_tokenizer.evaluation.plain_inputs import FLAT_COLOURS, score_random_flats  # noqa: E402


def edge_and_interior(tok, size: int = 256) -> dict[str, float]:
    """Median over FLAT_COLOURS of the PSNR of the edge ring and of the interior (MAX_RING+) at size²."""
    edge, inner = [], []
    for rgb in FLAT_COLOURS.values():
        image = np.full((size, size, 3), rgb, dtype=np.uint8)
        rings = ring_mse(image, reconstruct(tok, image))
        edge.append(min(psnr(rings[0]), 99.0))
        inner.append(min(psnr(rings[MAX_RING]), 99.0))
    return {"edge_median": round(statistics.median(edge), 2), "interior_median": round(statistics.median(inner), 2)}


def measure(path: str, args: argparse.Namespace) -> dict:
    tok = load(path)
    result = {"path": path, **measure_tokenizer(tok, args)}
    for size in (128, 256):
        result[f"random_flats_{size}"] = score_random_flats(tok, size)
    result["flat_rings_256"] = edge_and_interior(tok)
    return result


def report(results: dict[str, dict]) -> str:
    lines = ["| model | PSNR / SSIM, 50 photos | usage adj / noun | latent PR adj / noun | random flats 128² median / p10 / min | "
             "random flats 256² median / p10 / min | flat shift 256² | 13 flats: edge / interior median | plain ≥ 30 dB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        f128, f256 = r["random_flats_128"], r["random_flats_256"]
        geo = r["geometry"]
        pr = " / ".join(f"{geo[g]['latent_pr']:.2f}" for g in ("adjective", "noun") if g in geo)
        use = " / ".join(f"{r['usage'][g]:.1f}" for g in ("adjective", "noun") if g in r["usage"])
        plain = sum(v >= 30 for v in r["plain"].values())
        lines.append(f"| {label} | {r['psnr']:.2f} / {r['ssim']:.3f} | {use} | {pr} | "
                     f"{f128['median']:.2f} / {f128['p10']:.2f} / {f128['min']:.2f} | "
                     f"{f256['median']:.2f} / {f256['p10']:.2f} / {f256['min']:.2f} | {f256['mean_shift']:.1f} | "
                     f"{r['flat_rings_256']['edge_median']:.1f} / {r['flat_rings_256']['interior_median']:.1f} | {plain} of {len(r['plain'])} |")
    lines += ["", "Plain inputs at 256² (dB):", "", "| input | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    names = next(iter(results.values()))["plain"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{r['plain'][n]:.1f}" for r in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--models", nargs="+", required=True, metavar="LABEL=PATH")
    p.add_argument("--test-images", type=int, default=50)
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    target = args.out.with_suffix(".json")
    results = json.loads(target.read_text()) if target.is_file() else {}
    for item in args.models:
        label, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--models takes LABEL=PATH, got {item!r}")
        if results.get(label, {}).get("path") != path:
            results[label] = measure(path, args)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(results, indent=1) + "\n")
            print(f"measured {label}", flush=True)
    ordered = {item.partition("=")[0]: results[item.partition("=")[0]] for item in args.models}
    text = report(ordered)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
