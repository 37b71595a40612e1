"""Encoder time with GroupNorm against a per-position LayerNorm, side by side in one process.

The same weights run both ways (the norms' parameters are interchangeable), so only the norm
differs. Each round encodes the same photos-sized random image with both, in alternating order; the
figure is the median per call, and the ratio the ratio of medians. Do not run next to a training job.

    python benchmarks/encoder_norm_speed.py --model vqct-open-f8 --size 640x427 --rounds 7

Writes benchmarks/results/encoder_norm_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.config import VQCTConfig

ROOT = Path(__file__).resolve().parents[1]


def with_norm(tok: VQCTTokenizer, norm: str) -> VQCTTokenizer:
    config = VQCTConfig.from_dict({**tok.config.to_dict(), "encoder_norm": norm})
    other = VQCTTokenizer(config, tok.vocab)
    other.model.load_state_dict(tok.model.state_dict())
    with torch.no_grad():
        other.codebook.copy_(tok.codebook)
    return other.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vqct-open-f8")
    p.add_argument("--size", default="640x427", help="WxH")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "encoder_norm_speed.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    base = VQCTTokenizer.from_pretrained(args.model, local_files_only=True)
    toks = {norm: with_norm(base, norm) for norm in ("group", "layer")}
    times: dict[str, list[float]] = {n: [] for n in toks}
    for tok in toks.values():
        tok.encode(image, resize=False)  # untimed warm-up
    for r in range(args.rounds):
        for norm in (list(toks) if r % 2 == 0 else list(reversed(toks))):
            start = time.perf_counter()
            toks[norm].encode(image, resize=False)
            times[norm].append(time.perf_counter() - start)
    medians = {n: statistics.median(t) for n, t in times.items()}
    result = {"model": args.model, "size": args.size, "threads": args.threads, "rounds": args.rounds,
              "median_s": medians, "layer_over_group": medians["layer"] / medians["group"], "torch": torch.__version__}
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
