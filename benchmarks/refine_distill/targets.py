"""Refined token targets for distilling refinement into the encoder (round 14 probe; ran from runs/r14/).

    OMP_NUM_THREADS=1 python benchmarks/refine_distill/targets.py --worker 0 --workers 2 --steps 10 --out runs/r14/targets

Each worker takes every workers-th photo of a fixed random order of the list, preprocesses it as
``vqct eval`` does (short side 256, centre crop), refines its tokens with the shipped default and
appends (pixels as float16, plain ids, refined ids) to shards of 20 photos. A rerun resumes after
the last complete shard. Round 14 ran two workers for 44 minutes: 400 photos, 13.5 s each.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.refinement import refine_ids

SHARD = 20

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--list", default="../shared/data/open/train.txt", help="photo list (paths relative to it)")
parser.add_argument("--worker", type=int, default=0)
parser.add_argument("--workers", type=int, default=1)
parser.add_argument("--steps", type=int, default=10, help="refinement steps per photo")
parser.add_argument("--out", default="runs/r14/targets")
parser.add_argument("--model", default="vqct-open-f8")
args = parser.parse_args()

tok = VQCTTokenizer.from_pretrained(args.model)
root = Path(args.list).parent
paths = [line.strip() for line in open(args.list) if line.strip()]
order = np.random.default_rng(1234).permutation(len(paths))  # the same order in every worker
mine = [paths[i] for i in order[args.worker::args.workers]]
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)


def shard_file(n: int) -> Path:
    return out / f"w{args.worker}_{n:04d}.npz"


shard = 0
while shard_file(shard).exists():
    shard += 1
buf, changed, t0 = [], [], time.time()
for rel in mine[shard * SHARD:]:
    x = tok.preprocess([str(root / rel)])[0][0][None]  # (1, 3, 256, 256) in [-1, 1]
    plain = refine_ids(tok.model, tok.codebook, x, 1)  # 1 step: the encoder's own tokens
    refined = refine_ids(tok.model, tok.codebook, x, args.steps)
    changed.append((plain != refined).any(-1).float().mean().item())
    buf.append((x[0].half().numpy(), plain[0].numpy().astype(np.int16), refined[0].numpy().astype(np.int16), rel))
    if len(buf) == SHARD:
        x_, plain_, refined_, rels = zip(*buf)
        np.savez(shard_file(shard), x=np.stack(x_), plain=np.stack(plain_), refined=np.stack(refined_), paths=np.array(rels))
        print(f"shard {shard}: {time.time() - t0:.0f} s, cells refinement changed {np.mean(changed):.3f}", flush=True)
        buf, shard = [], shard + 1
