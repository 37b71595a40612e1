"""Is it the decoder's GroupNorm? Flat interiors decoded with another image size's norm statistics.

Round 10 (issue 20). A flat colour comes back at 33 dB from 64² and 24 dB from 256², with the same
tokens in the interior (``flat_interiors.py``). Two things change with the image size: how far a cell
is from an edge (the convolutions' context), and the decoder's GroupNorm statistics, which span the
whole image. This separates them. For each flat colour at 256² it takes the token grid the encoder
gives, and decodes

* ``full``: the whole 32x32-cell grid, as the tokenizer does;
* ``crop``: only the central 8x8 cells, alone (a 64² image with the interior's tokens);
* ``full, crop stats``: the whole grid, every decoder GroupNorm using the statistics it had in ``crop``;
* ``crop, full stats``: the central 8x8 cells, every GroupNorm using the statistics of ``full``.

PSNR is over the central 8x8 cells (64x64 pixels) in every case. If ``full, crop stats`` comes back
near ``crop``, the whole-image statistics are the cause; if it stays near ``full``, the context is.

    python benchmarks/norm_context.py --models vqct-open-f8 --out benchmarks/results/norm_context

Writes {out}.json and {out}.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_flats import load  # noqa: E402

from vqct_tokenizer.evaluation.plain_inputs import FLAT_COLOURS  # noqa: E402

SIZE, CROP_CELLS, CELL = 256, 8, 8


@contextmanager
def group_norm_stats(decoder: nn.Module, record: list | None = None, replay: list | None = None):
    """Within the block every ``nn.GroupNorm`` of ``decoder`` either appends its (mean, var) per
    (sample, group) to ``record``, or normalises with the next pair from ``replay``, in call order."""
    norms = [m for m in decoder.modules() if isinstance(m, nn.GroupNorm)]
    originals = [m.forward for m in norms]
    cursor = iter(replay or [])

    def make(m: nn.GroupNorm):
        def forward(x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = x.shape
            g = x.reshape(b, m.num_groups, -1)
            if replay is not None:
                mean, var = next(cursor)
            else:
                mean, var = g.mean(-1, keepdim=True), g.var(-1, unbiased=False, keepdim=True)
                if record is not None:
                    record.append((mean, var))
            y = ((g - mean) / torch.sqrt(var + m.eps)).reshape(b, c, h, w)
            return y * m.weight.view(1, c, 1, 1) + m.bias.view(1, c, 1, 1)
        return forward

    for m in norms:
        m.forward = make(m)
    try:
        yield len(norms)
    finally:
        for m, f in zip(norms, originals):
            m.forward = f


def psnr(rec: torch.Tensor, target: torch.Tensor) -> float:
    mse = float(((rec.clamp(-1, 1) - target) / 2).pow(2).mean())
    return round(-10 * math.log10(mse), 2) if mse > 0 else math.inf


@torch.no_grad()
def run(tok) -> dict:
    m, q, codebook = tok.model.float(), tok.model.quantizer, tok.codebook.float()
    cells = SIZE // CELL
    a = (cells - CROP_CELLS) // 2
    centre = slice(a, a + CROP_CELLS)
    px = slice(a * CELL, (a + CROP_CELLS) * CELL)
    out = {}
    for name, rgb in FLAT_COLOURS.items():
        x = (torch.tensor(rgb, dtype=torch.float32) / 127.5 - 1).view(1, 3, 1, 1)
        ids = q.encode(m.encode_latent(x.expand(1, 3, SIZE, SIZE).contiguous()), codebook)
        z_full = q.lookup(ids, codebook)
        z_crop = z_full[:, :, centre, centre].contiguous()
        target = x.expand(1, 3, CROP_CELLS * CELL, CROP_CELLS * CELL)
        full_stats, crop_stats = [], []
        with group_norm_stats(m.decoder, record=full_stats):
            full = m.decode_latent(z_full)[:, :, px, px]
        with group_norm_stats(m.decoder, record=crop_stats):
            crop = m.decode_latent(z_crop)
        reference = m.decode_latent(z_full)[:, :, px, px]  # the patched norm equals nn.GroupNorm
        assert torch.allclose(reference, full, atol=1e-4), "patched GroupNorm differs from nn.GroupNorm"
        with group_norm_stats(m.decoder, replay=crop_stats):
            full_crop_stats = m.decode_latent(z_full)[:, :, px, px]
        with group_norm_stats(m.decoder, replay=full_stats):
            crop_full_stats = m.decode_latent(z_crop)
        # How far apart the two sizes' statistics are, layer by layer: |Δmean| / sqrt(var) and var ratio.
        shift = [float(((fm - cm).abs() / torch.sqrt(cv + 1e-6)).mean()) for (fm, fv), (cm, cv) in zip(full_stats, crop_stats)]
        ratio = [float((fv / (cv + 1e-12)).mean()) for (fm, fv), (cm, cv) in zip(full_stats, crop_stats)]
        out[name] = {"full": psnr(full, target), "crop": psnr(crop, target),
                     "full, crop stats": psnr(full_crop_stats, target), "crop, full stats": psnr(crop_full_stats, target),
                     "mean shift (in crop sd), per norm": [round(s, 3) for s in shift],
                     "var ratio full/crop, per norm": [round(r, 3) for r in ratio]}
        print(name, {k: v for k, v in out[name].items() if "per norm" not in k}, flush=True)
    return out


def report(results: dict) -> str:
    cols = ["full", "crop", "full, crop stats", "crop, full stats"]
    lines = ["# Flat interiors with another size's GroupNorm statistics", "",
             "`python benchmarks/norm_context.py` (see its docstring). PSNR (dB) over the central 8x8 cells of "
             "a flat colour's 256² token grid, decoded four ways.", ""]
    for model, per in results.items():
        lines += [f"## {model}", "", "| colour | " + " | ".join(cols) + " | median |Δmean|/sd | median var ratio |",
                  "|---|" + "---:|" * (len(cols) + 2)]
        for name, r in per.items():
            s = sorted(r["mean shift (in crop sd), per norm"])
            v = sorted(r["var ratio full/crop, per norm"])
            lines.append(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in cols)
                         + f" | {s[len(s) // 2]:.2f} | {v[len(v) // 2]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vqct-open-f8"])
    p.add_argument("--out", type=Path, required=True, help="output path without suffix")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {name: run(load(name)) for name in args.models}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(results) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
