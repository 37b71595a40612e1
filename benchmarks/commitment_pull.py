"""Does the commitment term hold a flat colour's latent in its code's cell? (round 9, issue 20)

For each flat colour of ``evaluation/plain_inputs.py`` at 64² (the training crop size), the
gradient on the pre-quantization latent of
* the reconstruction terms the recipe trains with (L1 and the low-pass L1 at weight 2; the
  perceptual loss is left out, so this understates the decoder's side), through the straight-through
  estimator, and
* the commitment term, beta·||z − sg(z_q)||² (beta 0.25),
each projected onto the tangent of the unit sphere (the cosine lookup normalises z, so only the
tangential part moves it). Norms are averaged over the central 4×4 cells. A commitment pull much
weaker than the decoder's gradient cannot be what keeps a latent at a poor code.

    python benchmarks/commitment_pull.py --start runs/vqct-open-f8-r8 --out benchmarks/results/commitment_pull

``--start`` is an exported model folder, loaded as a warm start of config ``open-f8-plain``.
Writes {out}.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from vqct_tokenizer.evaluation.plain_inputs import FLAT_COLOURS
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.losses import lowpass_loss, straight_through
from vqct_tokenizer.training.model import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start", required=True, help="an exported model folder (run.init_from)")
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_config("open-f8-plain", [f"run.init_from={args.start}"])
    model = build_model(cfg).eval()
    ae, beta = model.autoencoder, float(cfg["loss"]["beta"])
    codebook = model.codebook().detach()
    groups, dim = len(ae.quantizer.groups), ae.quantizer.dim
    names = list(FLAT_COLOURS)
    x = torch.stack([(torch.tensor(FLAT_COLOURS[n], dtype=torch.float32) / 127.5 - 1).view(3, 1, 1).expand(3, 64, 64)
                     for n in names])
    z = ae.encode_latent(x).detach().requires_grad_(True)  # (B, G·D, 8, 8), unit-norm per group
    z_q, _ = ae.quantizer(z, codebook)
    rec = ae.decode_latent(straight_through(z, z_q))
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
    decoder_loss = l1(x, rec) + float(cfg["loss"]["lowpass_weight"]) * lowpass_loss(x, rec, int(cfg["loss"]["lowpass_cell"]), l1)
    commitment = beta * F.mse_loss(z, z_q.detach()) * groups
    g_dec, = torch.autograd.grad(decoder_loss, z, retain_graph=True)
    g_com, = torch.autograd.grad(commitment, z)

    def tangent(g: torch.Tensor) -> torch.Tensor:  # (B, G, D, h, w) without the radial part
        b, _, h, w = g.shape
        g, u = g.view(b, groups, dim, h, w), z.detach().view(b, groups, dim, h, w)
        return g - (g * u).sum(2, keepdim=True) * u

    t_dec, t_com = tangent(g_dec)[..., 2:6, 2:6], tangent(g_com)[..., 2:6, 2:6]
    results = {}
    for i, name in enumerate(names):
        for gi, group in enumerate(g.name for g in ae.quantizer.groups):
            dec = t_dec[i, gi].norm(dim=0).mean().item()
            com = t_com[i, gi].norm(dim=0).mean().item()
            results.setdefault(name, {})[group] = {"decoder_gradient": dec, "commitment_gradient": com,
                                                   "ratio": round(com / dec, 4)}
            print(f"{name:8s} {group:9s} decoder {dec:.2e}  commitment {com:.2e}  commitment/decoder {com / dec:.3f}")
    ratios = [v["ratio"] for per in results.values() for v in per.values()]
    summary = {"median_ratio": sorted(ratios)[len(ratios) // 2], "max_ratio": max(ratios)}
    print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"start": args.start, "summary": summary, "colours": results},
                                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
