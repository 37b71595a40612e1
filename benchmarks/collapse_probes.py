"""Latent-collapse probes: candidate fixes trained side by side at one short, equal budget.

Each variant is the open-f8 recipe with a few config overrides, trained for ``--steps`` steps per
seed (batch 8, 64² random-resized crops of the open training photos, one torch thread, bf16 where
the CPU has it), then measured on the open test photos at 256² native:

* PSNR / SSIM on the first ``--test-images`` photos (``vqct eval``'s meters, no FD);
* the centred participation ratio (PR) of the pre-quantization latents per group, the share of the
  first component, the PR of the codes in use, and code usage;
* PSNR of decoding the unquantized latent cut to its top 2 principal components per group, against
  the full latent (a decoder that reads two numbers per cell loses nothing);
* PSNR of the plain inputs (flat colours, gradient, colour ramp, checkerboard) from tokens.

Runs resume (``--resume``) and each run's measurements are cached beside its checkpoint, so the
command can be rerun to add variants or seeds:

    python benchmarks/collapse_probes.py --data-root ../shared/data --steps 600 --seeds 0 1 --jobs 2
    python benchmarks/collapse_probes.py --variants shipped cos8 --report-only

Writes benchmarks/results/collapse_probes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

FINETUNE = ["codebook.source=fixed", "optim.lr=1e-4", "optim.warmup_steps=50", "optim.ema_decay=0.998"]
COLOUR_FIX = ["data.hue_jitter=0.5", "data.saturation=[0.8,1.6]", "loss.colour_balance=0.5"]
# round 6's third stage (configs/open-f8-spread) on top of FINETUNE + COLOUR_FIX
R6 = ["model.encoder_norm=layer", "data.synthetic=0.25", "codebook.remap=linear",
      "loss.spread_weight=1.0", "loss.spread_floor=9"]
R6_START = FINETUNE + ["run.init_from=vqct-open-f8"] + COLOUR_FIX + R6  # round 7 continues the shipped round 6
PLAIN = ["data.synthetic=0.35", "data.synthetic_plain=0.3"]  # plain patterns: 30 % of 35 % synthetic samples

# name -> (config overrides on top of open-f8, what it tests)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "shipped": ([], "round-2 recipe: Euclidean lookup in 64 dims, straight-through, commitment 0.25"),
    "euc8": (["model.codebook_dim=8"], "Euclidean lookup in 8 dims"),
    "cos8": (["model.codebook_dim=8", "codebook.cosine=true"], "cosine lookup in 8 dims (ViT-VQGAN-style factorised codes)"),
    "cos16": (["model.codebook_dim=16", "codebook.cosine=true"], "cosine lookup in 16 dims"),
    "cos32": (["model.codebook_dim=32", "codebook.cosine=true"], "cosine lookup in 32 dims"),
    "rotation": (["loss.quantizer_gradient=rotation"], "the rotation trick instead of the straight-through estimator"),
    "no-quantizer": (["loss.quantizer_gradient=none"], "control: the decoder reads the unquantized latent (a plain autoencoder)"),
    # colour probes, on top of round 3's open-f8 (--config open-f8 --out benchmarks/results/colour_probes)
    "r3": ([], "the base recipe unchanged"),
    "hue": (["data.hue_jitter=0.5", "data.saturation=[0.8,1.6]"],
            "half the crops' chroma rotated by a random angle and scaled by 0.8-1.6"),
    "balance": (["loss.colour_balance=1.0"], "L1 on whitened colour axes (green-magenta weighted 7.5x)"),
    "balance-half": (["loss.colour_balance=0.5"], "L1 on colour axes weighted by the square root of whitening"),
    "hue+balance": (["data.hue_jitter=0.5", "data.saturation=[0.8,1.6]", "loss.colour_balance=1.0"],
                    "both"),
    "fix": (COLOUR_FIX, "the colour fix of round 4's second stage (jitter + balance 0.5), from step 0"),
    "layer": (["model.encoder_norm=layer"], "the encoder's GroupNorms replaced by per-position LayerNorms, from step 0"),
    # second stages of round 3's shipped models: encoder and decoder fine-tuned around their frozen
    # codebook (training/warm_start.py), at a lower learning rate. They start from round 3's exports:
    #   for m in vqct-open-f8 baseline-open-f8; do mkdir -p runs/$m-r3 &&
    #     git archive 182eb38 weights/$m | tar -x --strip-components=2 -C runs/$m-r3; done
    "ft-r3": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"], "round 3's vqct-open-f8 fine-tuned with its own recipe (the control)"),
    "ft-fix": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX, "round 3's vqct-open-f8 fine-tuned with the colour fix"),
    "ft-fix-grey": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX + ["loss.colour_balance_norm=grey"],
                    "the colour fix with its balanced L1 rescaled so that a grey error weighs what RGB L1 charges"),
    "ft-fix-baseline": (FINETUNE + ["run.init_from=runs/baseline-open-f8-r3"] + COLOUR_FIX,
                        "round 3's baseline-open-f8 fine-tuned with the colour fix"),
    # the encoder's norm (round 5): per-position statistics instead of GroupNorm's whole-image ones,
    # so tokens do not depend on the image's size (--out benchmarks/results/encoder_norm_probes)
    "ft-fix-layer": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX + ["model.encoder_norm=layer"],
                     "the colour fix with the encoder's GroupNorms replaced by per-position LayerNorms"),
    "ft-fix-local-group": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX
                           + ["model.encoder_norm=local_group"],
                           "the colour fix with the encoder's GroupNorms computed per position (8 groups)"),
    "ft-fix-layer-synthetic": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX
                               + ["model.encoder_norm=layer", "data.synthetic=0.25"],
                               "per-position LayerNorms, and a quarter of the samples dead-leaves images of flat random colours"),
    "ft-fix-baseline-layer": (FINETUNE + ["run.init_from=runs/baseline-open-f8-r3"] + COLOUR_FIX
                              + ["model.encoder_norm=layer"],
                              "round 3's baseline-open-f8 fine-tuned with the colour fix and per-position LayerNorms"),
    # what might lift the plain inputs still under 30 dB (magenta, blue): more dead leaves, or less
    # weight on the perceptual loss, which cares little about a flat area's exact colour
    "ft-fix-layer-synthetic-half": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX
                                    + ["model.encoder_norm=layer", "data.synthetic=0.5"],
                                    "per-position LayerNorms, and half the samples dead leaves"),
    "ft-fix-layer-synthetic-perc-half": (FINETUNE + ["run.init_from=runs/vqct-open-f8-r3"] + COLOUR_FIX
                                         + ["model.encoder_norm=layer", "data.synthetic=0.25",
                                            "loss.perceptual_weight=0.5"],
                                         "per-position LayerNorms, a quarter dead leaves, perceptual weight 0.5"),
    "ft-fix-baseline-layer-synthetic": (FINETUNE + ["run.init_from=runs/baseline-open-f8-r3"] + COLOUR_FIX
                                        + ["model.encoder_norm=layer", "data.synthetic=0.25"],
                                        "round 3's baseline-open-f8 with the shipped second stage: per-position "
                                        "LayerNorms and a quarter dead-leaves samples"),
    # round 6: past the latent-PR ceiling of a frozen codebook (docs/BENCHMARKS.md). Both continue the
    # shipped round-5 default with its own second stage; the codebook gets a trainable linear map
    "r5-remap": (FINETUNE + ["run.init_from=vqct-open-f8"] + COLOUR_FIX
                 + ["model.encoder_norm=layer", "data.synthetic=0.25", "codebook.remap=linear"],
                 "control: round 5's second stage continued, the word codes through a trainable linear map"),
    "r5-remap-spread": (FINETUNE + ["run.init_from=vqct-open-f8"] + COLOUR_FIX
                        + ["model.encoder_norm=layer", "data.synthetic=0.25", "codebook.remap=linear",
                           "loss.spread_weight=1.0", "loss.spread_floor=12"],
                        "the same, and a hinge on each group's batch latent PR below 12"),
    "r5-remap-spread9": (FINETUNE + ["run.init_from=vqct-open-f8"] + COLOUR_FIX
                         + ["model.encoder_norm=layer", "data.synthetic=0.25", "codebook.remap=linear",
                            "loss.spread_weight=1.0", "loss.spread_floor=9"],
                         "the hinge with its floor at 9 (just above issue 20's bar of 8)"),
    "baseline-r5-remap-spread9": (FINETUNE + ["run.init_from=baseline-open-f8"] + COLOUR_FIX
                                  + ["model.encoder_norm=layer", "data.synthetic=0.25", "codebook.remap=linear",
                                     "loss.spread_weight=1.0", "loss.spread_floor=9"],
                                  "the learned baseline (round 5) with the same continuation: remap, hinge at 9"),
    # round 7: plain inputs (flat colours, gradients, ramps, checkerboards) on top of round 6's default
    "r6-spread9": (R6_START, "control: round 6's third stage continued unchanged"),
    "r6-plain": (R6_START + PLAIN,
                 "the same, with plain patterns as 30 % of 35 % synthetic samples (dead leaves stay at ~25 %)"),
    "r6-decnorm": (R6_START + ["model.decoder_norm=layer"],
                   "round 6's third stage continued with the decoder's GroupNorms per position (LayerNorm)"),
    "r6-plain-decnorm": (R6_START + PLAIN + ["model.decoder_norm=layer"],
                         "plain patterns and the decoder's norms per position"),
    "r6-lowpass": (R6_START + ["loss.lowpass_weight=2.0"],
                   "round 6's third stage continued with the L1 of 8x8-pooled images added at weight 2"),
    "r6-perc-half": (R6_START + ["loss.perceptual_weight=0.5"],
                     "round 6's third stage continued with the perceptual loss at half weight"),
    "r6-plain-lowpass": (R6_START + PLAIN + ["loss.lowpass_weight=2.0"], "plain patterns and the low-pass L1 together"),
}


def run_dir(root: Path, variant: str, seed: int) -> Path:
    return root / f"{variant}_seed{seed}"


def train(variant: str, seed: int, args: argparse.Namespace) -> Path:
    out = run_dir(args.runs, variant, seed)
    overrides, _ = VARIANTS[variant]
    cmd = [sys.executable, "-m", "vqct_tokenizer", "train", "--config", args.config, "--resume",
           f"data.train={args.data_root / 'open' / 'train.txt'}", f"optim.steps={args.steps}", f"run.seed={seed}",
           "run.threads=1", f"run.out_dir={out}", f"run.ckpt_every={min(args.steps, 500)}", f"run.image_every={args.steps}",
           *overrides]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out


def measure(out: Path, args: argparse.Namespace) -> dict:
    cached = out / "probe.json"
    if cached.is_file() and json.loads(cached.read_text()).get("steps") == args.steps:
        return json.loads(cached.read_text())
    from vqct_tokenizer.training.checkpoint import find_latest
    from vqct_tokenizer.training.export import tokenizer_from_checkpoint

    torch.set_num_threads(1)
    ckpt = find_latest(out)
    result = {"steps": args.steps, "checkpoint": ckpt.name,
              **measure_tokenizer(tokenizer_from_checkpoint(ckpt, resolution=256), args)}
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


def measure_tokenizer(tok, args: argparse.Namespace) -> dict:
    """The probe figures of one tokenizer (a probe's checkpoint, or a shipped model for reference)."""
    import numpy as np
    from PIL import Image

    from vqct_tokenizer.evaluation.colour import ChromaMeter
    from vqct_tokenizer.evaluation.evaluate import evaluate, list_images
    from vqct_tokenizer.evaluation.geometry import pc_truncation_psnr
    from vqct_tokenizer.evaluation.plain_inputs import score_plain_inputs

    test = args.data_root / "open" / "test.txt"
    report = evaluate(tok, test, resolution=256, limit=args.test_images, compute_fd=False, external=False,
                      progress=False, batch_size=8)
    photos = torch.stack([tok.preprocess(str(p))[0][0] for p in list_images(test, 8)])
    chroma = ChromaMeter()
    for path in list_images(test, 20):
        image = np.asarray(Image.open(path).convert("RGB"))
        image = image[: image.shape[0] // 8 * 8, : image.shape[1] // 8 * 8]
        chroma.update(image, tok.reconstruct(image, resize=False, output_type="np", decode_precision="fp32"))
    with torch.no_grad():
        truncation = pc_truncation_psnr(tok.model, tok.config, photos, ks=(1, 2, 4))
    return {
        "psnr": report["metrics"]["psnr"], "ssim": report["metrics"]["ssim"],
        "usage": {g: v["used_percent"] for g, v in report["usage"]["groups"].items()},
        "geometry": report["latent_geometry"]["groups"],
        "pc_truncation_psnr": truncation,
        "plain": score_plain_inputs(tok),
        "chroma": chroma.result(),
    }


def run_one(variant: str, seed: int, args: argparse.Namespace) -> dict:
    out = run_dir(args.runs, variant, seed)
    if not args.report_only:
        train(variant, seed, args)
    return measure(out, args)


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summarise(results: dict[str, dict[int, dict]]) -> str:
    plain_names = ["flat-black", "flat-white", "flat-grey", "flat-red", "flat-green", "flat-blue", "flat-teal",
                   "flat-olive", "flat-yellow", "flat-magenta", "gradient", "colour-ramp", "checkerboard"]
    head = ("| variant | seeds | latent PR adj / noun | top share adj / noun | PSNR / SSIM | full − top-2 PCs (dB) | "
            "usage adj / noun % | chroma slope Cb / Cr | min plain | " + " | ".join(plain_names) + " |")
    lines = [head, "|" + "---|" * (9 + len(plain_names))]
    for variant, by_seed in results.items():
        runs = list(by_seed.values())
        g = lambda grp, key: [r["geometry"][grp][key] for r in runs]  # noqa: E731
        row = [variant, ",".join(map(str, by_seed)),
               f"{_mean_sd(g('adjective', 'latent_pr'))} / {_mean_sd(g('noun', 'latent_pr'))}",
               f"{_mean_sd(g('adjective', 'latent_top_share'))} / {_mean_sd(g('noun', 'latent_top_share'))}",
               f"{_mean_sd([r['psnr'] for r in runs])} / {_mean_sd([r['ssim'] for r in runs])}",
               _mean_sd([r["pc_truncation_psnr"]["full"] - r["pc_truncation_psnr"]["top2"] for r in runs]),
               f"{_mean_sd([r['usage']['adjective'] for r in runs])} / {_mean_sd([r['usage']['noun'] for r in runs])}",
               (f"{_mean_sd([r['chroma']['slope']['Cb'] for r in runs if 'chroma' in r])} / "
                f"{_mean_sd([r['chroma']['slope']['Cr'] for r in runs if 'chroma' in r])}"),
               _mean_sd([min(r["plain"].values()) for r in runs]),
               *(_mean_sd([r["plain"][n] for r in runs]) for n in plain_names)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", "../shared/data")))
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "collapse")
    p.add_argument("--config", default="open-f8-r2", help="the base recipe the variants change (default: round 2's, frozen)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--test-images", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each)")
    p.add_argument("--report-only", action="store_true", help="measure finished runs, train nothing")
    p.add_argument("--out", type=Path, default=RESULTS / "collapse_probes")
    p.add_argument("--title", default="Latent-collapse probes")
    p.add_argument("--reference", default=None, metavar="MODEL",
                   help="only measure this shipped model or exported folder as the probes are measured, "
                        "and write {out}_reference.json")
    args = p.parse_args()

    if args.reference:
        from vqct_tokenizer import VQCTTokenizer

        torch.set_num_threads(1)
        result = {"model": args.reference, **measure_tokenizer(VQCTTokenizer.from_pretrained(args.reference), args)}
        target = args.out.with_name(args.out.name + "_reference.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result)[:400])
        return
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda vs: (vs, run_one(*vs, args)), jobs))
    results: dict[str, dict[int, dict]] = {}
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").is_file() else {}
    for variant, by_seed in previous.get("runs", {}).items():  # keep variants measured by earlier invocations
        if previous.get("steps") == args.steps:
            results[variant] = {int(s): r for s, r in by_seed.items()}
    for (variant, seed), r in done:
        results.setdefault(variant, {})[seed] = r
    payload = {"what": __doc__.split("\n\n")[0], "steps": args.steps, "config": args.config,
               "variants": {v: {"overrides": VARIANTS[v][0], "tests": VARIANTS[v][1]} for v in results if v in VARIANTS},
               "runs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    table = summarise(results)
    args.out.with_suffix(".md").write_text(
        f"# {args.title} ({args.steps} steps of {args.config}, batch 8, 64² crops)\n\n"
        f"Command: `python benchmarks/collapse_probes.py --data-root ../shared/data --steps {args.steps} "
        f"--config {args.config} --variants {' '.join(results)} --out {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}`\n\n"
        + "\n".join(f"- `{v}`: {VARIANTS[v][1]} ({' '.join(VARIANTS[v][0]) or 'no overrides'})" for v in results if v in VARIANTS)
        + "\n\n" + table + "\n")
    print(table)


if __name__ == "__main__":
    main()
