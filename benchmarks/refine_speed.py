"""What encode-time refinement costs and buys per step: ``encode(refine_steps=N)`` against plain
``encode``, side by side in one process, on open test photos at 256x256 (native centre crops).

    python benchmarks/refine_speed.py --data-root ../shared/data --photos 8 --steps 0 5 10 20 40

For each step count: the median seconds of one encode per photo (plain encode is N = 0), the ratio
to plain encode, and the mean PSNR of the float32 decode against the photo. The step counts run in
rotating order on every photo, so a slow moment of a shared CPU does not land on one of them.
Writes benchmarks/results/refine_speed.json. Run it on an idle machine: the times are wall clock.
``--picture PATH`` also saves, one row per photo, the photo, its reconstruction from the encoder's
tokens and from the tokens of the largest step count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.plain_inputs import psnr_uint8

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def centre_crop(path: Path, size: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vqct-open-f8")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA_ROOT", "../shared/data")))
    p.add_argument("--photos", type=int, default=8, help="the first N open test photos")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, nargs="+", default=[0, 5, 10, 20, 40])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "refine_speed.json")
    p.add_argument("--picture", type=Path, default=None, help="save photo | encoder's | most steps' rows here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    tok = VQCTTokenizer.from_pretrained(args.model)
    listing = args.data_root / "open" / "test.txt"
    paths = [args.data_root / "open" / line for line in listing.read_text().split()[:args.photos]]
    seconds: dict[int, list[float]] = {n: [] for n in args.steps}
    psnr: dict[int, list[float]] = {n: [] for n in args.steps}
    rows_picture: list[np.ndarray] = []
    tok.encode(centre_crop(paths[0], args.size), resize=False, refine_steps=2)  # warm-up, not timed
    for i, path in enumerate(paths):
        image = centre_crop(path, args.size)
        order = args.steps[i % len(args.steps):] + args.steps[:i % len(args.steps)]
        shown: dict[int, np.ndarray] = {}
        for n in order:
            start = time.perf_counter()
            tokens = tok.encode(image, resize=False, refine_steps=n)
            seconds[n].append(time.perf_counter() - start)
            decoded = tok.decode(tokens, output_type="np", precision="fp32")
            psnr[n].append(psnr_uint8(image, decoded))
            if n in (min(args.steps), max(args.steps)):
                shown[n] = decoded
        rows_picture.append(np.concatenate([image, shown[min(args.steps)], shown[max(args.steps)]], axis=1))
        print(f"{path.name}: " + ", ".join(f"{n} steps {psnr[n][-1]:.2f} dB" for n in args.steps), flush=True)

    base = statistics.median(seconds[args.steps[0]])
    rows = {n: {"median_s": statistics.median(seconds[n]), "ratio_to_first": statistics.median(seconds[n]) / base,
                "psnr_mean": float(np.mean(psnr[n])), "psnr_gain_mean": float(np.mean(psnr[n]) - np.mean(psnr[args.steps[0]]))}
            for n in args.steps}
    print(f"{'steps':>6} {'s / photo':>10} {'ratio':>7} {'PSNR':>7} {'gain':>6}")
    for n, r in rows.items():
        print(f"{n:>6} {r['median_s']:>10.2f} {r['ratio_to_first']:>6.1f}x {r['psnr_mean']:>7.2f} {r['psnr_gain_mean']:>+6.2f}")
    if args.picture is not None:
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows_picture, axis=0)).save(args.picture, quality=90)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": args.model, "photos": [q.name for q in paths], "size": args.size, "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "note": ("encode(refine_steps=N) per photo at native size, float32 decode; median seconds per photo, "
                 "ratio to the first step count (0 = plain encode), mean PSNR over the photos"),
        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
