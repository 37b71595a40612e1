"""Distil encode-time refinement into the encoder (round 14 probe; ran from runs/r14/).

    OMP_NUM_THREADS=1 python benchmarks/refine_distill/train.py --out runs/r14/distill-ce --steps 1500
    OMP_NUM_THREADS=1 python benchmarks/refine_distill/train.py --out runs/r14/distill-rec --steps 500 --recon 1.0

Trains the shipped default's encoder and quant_conv to pick the tokens refinement found for training
photos (``targets.py``). The decoder, post_quant_conv and codebook stay frozen, so every token still
decodes to what it did. Loss: cross-entropy over cosine logits / tau, the noun group against the
refined noun, the adjective group against its two refined adjectives (half each); ``--recon`` adds
the MSE of the straight-through reconstruction, refinement's own objective. The model is saved to
OUT/model every 250 steps; per-step figures go to OUT/log.jsonl.
"""
import argparse
import glob
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqct_tokenizer import VQCTTokenizer

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--targets", default="runs/r14/targets")
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=1500)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--crop", type=int, default=128, help="random crops of the 256² targets, aligned to cells")
parser.add_argument("--lr", type=float, default=1e-4)
parser.add_argument("--warmup", type=int, default=50)
parser.add_argument("--tau", type=float, default=0.03, help="temperature of the cosine logits")
parser.add_argument("--recon", type=float, default=0.0, help="weight of the straight-through MSE")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)
rng = np.random.default_rng(args.seed)

tok = VQCTTokenizer.from_pretrained("vqct-open-f8")
model, quantizer = tok.model, tok.model.quantizer
model.decoder.requires_grad_(False)
model.post_quant_conv.requires_grad_(False)
opt = torch.optim.Adam([*model.encoder.parameters(), *model.quant_conv.parameters()], lr=args.lr, betas=(0.9, 0.99))
codes = quantizer.codes(tok.codebook)  # (A+N, D), unit rows: the cosine lookup
A, D, f = tok.config.num_adjectives, quantizer.dim, tok.downsample_factor

shards = [np.load(fn) for fn in sorted(glob.glob(f"{args.targets}/*.npz"))]
X = np.concatenate([s["x"] for s in shards])                           # (n, 3, 256, 256) float16
Y = np.concatenate([s["refined"] for s in shards]).astype(np.int64)    # (n, 32, 32, 3) refined ids
P0 = np.concatenate([s["plain"] for s in shards]).astype(np.int64)     # the encoder's own ids
print(f"{len(X)} photos; cells refinement changed: {(Y != P0).any(-1).mean():.3f}", flush=True)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Random cell-aligned crops: pixels (B, 3, crop, crop) and their refined ids (B, h, w, 3)."""
    cells = args.crop // f
    idx = rng.integers(0, len(X), args.batch)
    oy, ox = rng.integers(0, X.shape[2] // f - cells + 1, (2, args.batch))
    x = [X[i, :, y * f:(y + cells) * f, x0 * f:(x0 + cells) * f].astype(np.float32) for i, y, x0 in zip(idx, oy, ox)]
    t = [Y[i, y:y + cells, x0:x0 + cells] for i, y, x0 in zip(idx, oy, ox)]
    return torch.from_numpy(np.stack(x)), torch.from_numpy(np.stack(t))


out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
json.dump(vars(args), open(out / "args.json", "w"), indent=1)
log = open(out / "log.jsonl", "a")
model.train()
t0 = time.time()
for step in range(args.steps):
    x, target = batch()
    lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
    for group in opt.param_groups:
        group["lr"] = lr
    z = model.encode_latent(x.contiguous(memory_format=torch.channels_last)).float()  # (B, 2D, h, w), unit per group
    target = target.reshape(-1, 3)                                                   # (P, 2 adjectives + 1 noun)
    logits_adj = z[:, :D].permute(0, 2, 3, 1).reshape(-1, D) @ codes[:A].t() / args.tau  # (P, A)
    logits_noun = z[:, D:].permute(0, 2, 3, 1).reshape(-1, D) @ codes[A:].t() / args.tau  # (P, N)
    half_each = torch.zeros_like(logits_adj).scatter_(1, target[:, :2], 0.5)
    ce_adj = -(half_each * logits_adj.log_softmax(1)).sum(1).mean()
    ce_noun = F.cross_entropy(logits_noun, target[:, 2] - A)
    loss = ce_adj + ce_noun
    rec = torch.zeros(())
    if args.recon:
        z_q = quantizer.lookup(quantizer.encode(z.detach(), tok.codebook), tok.codebook).float()
        rec = (model.decode_latent(z + (z_q - z).detach()) - x).pow(2).mean()  # straight through
        loss = loss + args.recon * rec
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if step % 25 == 0 or step == args.steps - 1:
        with torch.no_grad():
            ids = quantizer.encode(z.detach(), tok.codebook).reshape(-1, 3)
        row = {"step": step, "ce_a": ce_adj.item(), "ce_n": ce_noun.item(), "rec": rec.item(),
               "agree_adj": (ids[:, :2].sort(1).values == target[:, :2].sort(1).values).all(1).float().mean().item(),
               "agree_noun": (ids[:, 2] == target[:, 2]).float().mean().item(), "lr": lr, "s": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()
    if (step + 1) % 250 == 0 or step == args.steps - 1:
        model.eval()
        tok.save_pretrained(out / "model")
        model.train()
