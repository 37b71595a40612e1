"""Write a shipped model's card (weights/NAME/README.md) from measured files only: the `vqct eval`
reports of the model and of its equal-budget baseline, and the run's metrics.jsonl.

    python benchmarks/model_card.py --name vqct-faces64 \\
        --report benchmarks/results/faces64_vqct_faces.json \\
        --baseline-report benchmarks/results/faces64_vqgan_faces.json \\
        --run /path/to/runs/faces64-vqct --baseline-run /path/to/runs/faces64-vqgan --step 2500 \\
        --command "vqct train --config faces64 data.train=../shared/data/faces256/train.txt"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = [("PSNR (dB)", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.4f}"), ("MS-SSIM", "ms_ssim", "{:.4f}"),
        ("FD-EffNetL0 (not FID)", "fd_effnet_l0", "{:.2f}")]


def load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def run_stats(run: Path, step: int) -> dict:
    """Wall time and img/s from the run's metrics log, up to ``step``."""
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln["step"] <= step]
    # each logged img_per_s covers log_every steps; wall time is the sum of those intervals
    cfg = json.loads((run / "config.json").read_text())
    per = cfg["run"]["log_every"] * cfg["optim"]["batch_size"]
    seconds = sum(per / ln["img_per_s"] for ln in lines if ln.get("img_per_s"))
    return {"seconds": seconds, "images": step * cfg["optim"]["batch_size"], "config": cfg}


def fmt(value, spec: str) -> str:
    return spec.format(value) if isinstance(value, (int, float)) else "n/a"


def usage_text(report: dict) -> str:
    return "; ".join(f"{name}: {g['used']}/{g['size']} ({g['used_percent']:.1f}%), perplexity {g['perplexity']:.0f}"
                     for name, g in report["usage"]["groups"].items())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--baseline-report", required=True)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--baseline-run", type=Path, required=True)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--other-name", default="the baseline", help="the compared model's name, for the table")
    p.add_argument("--rate-matched-note", default="see the three-seed comparison at equal rate in docs/BENCHMARKS.md (benchmarks/claims.py).")
    p.add_argument("--extra", default="", help="markdown appended to the card (limits, notes)")
    args = p.parse_args(argv)

    ours, base = load(args.report), load(args.baseline_report)
    run, base_run = run_stats(args.run, args.step), run_stats(args.baseline_run, args.step)
    cfg = run["config"]
    m, d = cfg["model"], ours["data"]
    is_vq = "code" in ours["usage"]["groups"]
    table = [f"| metric | {args.name} (this model) | {args.other_name}, same budget |", "|---|---|---|"]
    for label, key, spec in ROWS:
        table.append(f"| {label} | {fmt(ours['metrics'].get(key), spec)} | {fmt(base['metrics'].get(key), spec)} |")
    for label, key, spec in [("tokens / image", "tokens_per_image", "{:.0f}"), ("bits / image", "bits_per_image", "{:.0f}"),
                             ("token entropy, bits / image (marginal)", "entropy_bits_per_image_marginal", "{:.0f}")]:
        table.append(f"| {label} | {fmt(ours['rate'].get(key), spec)} | {fmt(base['rate'].get(key), spec)} |")
    table.append(f"| code usage | {usage_text(ours)} | {usage_text(base)} |")

    grid = d["resolution"] // 2 ** (len(m["ch_mult"]) - 1)
    if is_vq:
        what = (f"A plain VQGAN baseline trained by this project on CPU, with exactly the recipe of the VQCT model "
                f"it is compared with, except the quantizer: {ours['usage']['groups']['code']['size']} codes learned "
                f"from scratch, one id per cell of a {grid}×{grid} grid. It ships so the comparison can be re-measured.")
    else:
        g = ours["usage"]["groups"]
        what = (f"A VQCT image tokenizer (Zhang et al., CVPR 2024) trained by this project on CPU. Each "
                f"{m['resolution']}×{m['resolution']} image becomes a {grid}×{grid} grid; each cell is {m['k_adjectives']} "
                f"adjective ids and 1 noun id over a vocabulary of {g['adjective']['size']} adjectives and "
                f"{g['noun']['size']} nouns.")
    card = f"""# {args.name}

{what}

```python
from vqct_tokenizer import VQCTTokenizer
tok = VQCTTokenizer.from_pretrained("{args.name}")
```

## Evaluation: `vqct eval` on the test split

{d['count']} images of `{Path(d['source']).parent.name}/{Path(d['source']).name}` at {d['resolution']}², measured at step {args.step} of
both runs, which share the encoder, decoder, losses, data order, seed, batch and steps; only the
quantizer and codebook differ.

{chr(10).join(table)}

SSIM: 11×11 Gaussian window, σ 1.5, per RGB channel, averaged. MS-SSIM: {ours['methods'].get('ms_ssim', {}).get('note', 'see the report') if isinstance(ours['methods'].get('ms_ssim'), dict) else 'scales that fit the image size (see the report)'}.
FD-EffNetL0 is the Fréchet distance of pooled EfficientNet-Lite0 features; it is not FID and not
comparable with FID numbers. rFID and LPIPS were skipped: {'; '.join(f'{k}: {v}' for k, v in ours['skipped'].items() if k != 'fd_effnet_l0') or 'none'}.

Note the rate: VQCT cells carry more bits than a 1,024-code VQGAN cell, so part of any fidelity
difference may come from rate rather than from the transferred codebook. The rate-matched VQGAN
(`faces64-ratematched`, trained by `benchmarks/compare_variants.py`) answers that; {args.rate_matched_note}

## Training

```bash
{args.command}
```

- Data: `faces256` train split (10,000 CelebA-derived aligned face crops, resized to {m['resolution']}²). CelebA terms:
  non-commercial research use; cite Liu et al., ICCV 2015.
{"- Codebook: learned from scratch (taming's uniform init), no language prior." if is_vq else "- Codebook prior: adjectives and nouns mined with NLTK from the CUB, Oxford-102 flowers and COCO val2017" + chr(10) + "  captions, embedded by all-MiniLM-L6-v2 (not the paper's CLIP ViT-B/32), through a 2-layer GCN."}
- Architecture: ch {m['ch']}, ch_mult {m['ch_mult']}, {m['num_res_blocks']} res block(s) per level, attention at
  {m['attn_resolutions']}, z_channels {m['z_channels']}, D = {m['codebook_dim']}, k = {m['k_adjectives']}.
- Loss: L1 + EfficientNet-Lite0 perceptual ({cfg['loss']['perceptual_weight']}) + codebook + {cfg['loss']['beta']}·commitment;
  hinge PatchGAN from step {cfg['loss']['disc_start']} (weight {cfg['loss']['disc_weight']}, adaptive).
- Adam (0.5, 0.9), lr {cfg['optim']['lr']}, batch {cfg['optim']['batch_size']}, {args.step} steps ({run['images']:,} images,
  {run['images'] / 10000:.1f} epochs), about {run['seconds'] / 3600:.1f} h of wall time on a shared 2-core CPU
  ({args.other_name}: {base_run['seconds'] / 3600:.1f} h).

## Limits

- {m['resolution']}×{m['resolution']} only, and faces only: other content and sizes reconstruct poorly.
- Trained briefly on a CPU; far from the paper's 256² GPU recipe. Reconstructions are blurry.
{"- Its ids have no names (vocab entries are code0, code1, ...)." if is_vq else "- Word embeddings come from all-MiniLM-L6-v2, not CLIP; the words are labels of codes and describe" + chr(10) + "  image content only loosely."}
{args.extra}
"""
    out = Path("weights") / args.name / "README.md"
    out.write_text(card)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
