"""Flat colours in bulk: 48 random flat colours (arcsine law per channel) at 128², reconstructed from
tokens, for shipped models, exported folders or training runs (their latest checkpoint).

    python benchmarks/random_flats.py --models vqct-open-f8 runs/probe8/r6-plain_seed0 --out benchmarks/results/random_flats

Prints and writes {out}.json: median / 10th percentile / minimum PSNR, the share at >= 30 dB and the
mean colour shift of the centre (vqct_tokenizer/evaluation/plain_inputs.py score_random_flats).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.plain_inputs import score_random_flats


def load(name: str) -> VQCTTokenizer:
    path = Path(name)
    if path.is_dir() and any(path.glob("ckpt_*.pt")) or path.suffix == ".pt":  # a training run
        from vqct_tokenizer.training.checkpoint import find_latest
        from vqct_tokenizer.training.export import tokenizer_from_checkpoint

        return tokenizer_from_checkpoint(find_latest(path) if path.is_dir() else path, resolution=256)
    return VQCTTokenizer.from_pretrained(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--count", type=int, default=48)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.models:
        results[name] = score_random_flats(load(name), args.size, args.count)
        print(name, results[name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
