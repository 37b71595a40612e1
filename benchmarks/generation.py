"""Do the tokens help a generator? A stage-2 benchmark on CUB birds at 64x64.

Three tokenizers at one rate (2 adjective + 1 noun token per 8x8 cell, 192 tokens per 64x64 image),
all trained with the recipe that stopped the latent collapse (lookup by angle in 32 dimensions,
linear warm-up and cosine decay, EMA weights), on birds227/train at 64x64 with the CUB-only prior:

    vqct             the codebook transferred by the GCN from MiniLM word vectors (faces64-cosine)
    random-vectors   the same GCN and graph fed frozen random vectors (faces64-randomprior + cosine)
    learned-strong   codebooks learned from scratch: k-means start, EMA, dead-code restarts (faces64-learned-strong)

Then, per tokenizer and per generator seed, an unconditional GPT (vqct train-generator) on the train
tokens, and:
    test NLL       bits per image of the birds227 test tokens (lower = the tokens are easier to model;
                   compare with the tokens' own entropy, and only together with FD: a tokenizer can
                   make tokens easy to predict by carrying less)
    FD-EffNetL0    of N decoded samples against the test images at 64x64 (EfficientNet-Lite0 features,
                   not Inception: not FID). Floors: real train images vs test (the best a generator can
                   reach at this N) and test images reconstructed by the tokenizer vs test.

Every stage skips what is on disk (tokenizer checkpoints, exports, token datasets, generator
checkpoints, per-run reports), so a cut-off sweep resumes where it stopped. The tokenizer seed is
fixed (0); the spread is over generator seeds. Launch (about 105 minutes on 2 CPU cores, measured):

    python benchmarks/generation.py --tokenizer-steps 2000 --steps 1000 --seeds 0 1 2 --jobs 2
    python benchmarks/generation.py --report-only        # tables from the reports written
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKENIZERS = {
    # name: (shipped config, overrides)
    "vqct": ("faces64-cosine", []),
    "random-vectors": ("faces64-randomprior", ["codebook.cosine=true", "model.codebook_dim=32"]),
    "learned-strong": ("faces64-learned-strong", []),
}
# the fixed recipe on top of each config (open-f8's round-3 schedule and EMA), birds data and prior
RECIPE = ["codebook.prior=minilm-cub", "optim.warmup_steps=100", "optim.schedule=cosine", "optim.min_lr_ratio=0.1",
          "optim.ema_decay=0.999", "run.seed=0"]
CLAIMS = [("the language prior beats random word vectors", "vqct", "random-vectors"),
          ("transfer beats the strongest learned codebook", "vqct", "learned-strong")]
# two-sided 5 % critical values of Student's t by degrees of freedom
T_CRIT = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=os.environ.get("VQCT_DATA", "../shared/data"),
                   help="folder holding birds227/ (default: $VQCT_DATA or ../shared/data)")
    p.add_argument("--tokenizers", nargs="+", default=list(TOKENIZERS), choices=list(TOKENIZERS))
    p.add_argument("--tokenizer-steps", type=int, default=2000, help="tokenizer training steps (batch 8)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="generator seeds")
    p.add_argument("--steps", type=int, default=1000, help="generator training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"])
    p.add_argument("--samples", type=int, default=1000, help="samples per generator for FD")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    p.add_argument("--runs-dir", default="runs/genbench")
    p.add_argument("-o", "--output", default="benchmarks/results/generation", help="output prefix")
    p.add_argument("--report-only", action="store_true", help="only aggregate the reports already written")
    p.add_argument("--eval-one", nargs=3, metavar=("TOKENIZER", "SEED", "REPORT"), help=argparse.SUPPRESS)
    p.add_argument("--floors-one", nargs=2, metavar=("TOKENIZER", "REPORT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------- paths
def tok_run(args, name: str) -> Path:
    return Path(args.runs_dir) / "tok" / name


def tok_export(args, name: str) -> Path:
    return tok_run(args, name) / "export"


def token_dir(args, name: str, split: str) -> Path:
    return Path(args.runs_dir) / "tokens" / name / split


def gen_run(args, name: str, seed: int) -> Path:
    return Path(args.runs_dir) / "gen" / name / f"seed{seed}"


def report_path(args, name: str, seed: int | None) -> Path:
    tail = "floors" if seed is None else f"seed{seed}"
    return Path(f"{args.output}_runs") / f"{name}_{tail}.json"


def _env() -> dict[str, str]:
    # the package of this checkout, one thread per job: the sweep runs jobs side by side
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=_env())


def vqct(*argv: str) -> list[str]:
    return [sys.executable, "-m", "vqct_tokenizer", *argv]


# ------------------------------------------------------------------------------------- stages
def prepare_tokenizer(args, name: str) -> str:
    """Train (resumable), export, and tokenize train and test at 64x64."""
    from vqct_tokenizer.training.checkpoint import checkpoint_path

    root, run = Path(args.data_root) / "birds227", tok_run(args, name)
    config, overrides = TOKENIZERS[name]
    if not checkpoint_path(run, args.tokenizer_steps).is_file():
        _run(vqct("train", "--config", config, "--resume", f"data.train={root / 'train.txt'}", f"run.out_dir={run}",
                  f"optim.steps={args.tokenizer_steps}", "run.threads=1", "run.ckpt_every=500", "run.keep=2",
                  "run.image_every=1000", "run.log_every=100", *RECIPE, *overrides), run / "train.log")
    if not (tok_export(args, name) / "config.json").is_file():
        _run(vqct("export", str(checkpoint_path(run, args.tokenizer_steps)), "-o", str(tok_export(args, name))),
             run / "export.log")
    for split in ("train", "test"):
        if not (token_dir(args, name, split) / "manifest.json").is_file():
            _run(vqct("encode-dataset", str(root / f"{split}.txt"), "-o", str(token_dir(args, name, split)),
                      "--model", str(tok_export(args, name)), "--resolution", "64", "--no-progress"),
                 run / "encode.log")
    if not report_path(args, name, None).is_file():
        _run([sys.executable, __file__, "--floors-one", name, str(report_path(args, name, None)),
              "--runs-dir", args.runs_dir, "--data-root", args.data_root, "--samples", str(args.samples)],
             run / "floors.log")
    return f"tokenizer {name}"


def train_and_eval(args, name: str, seed: int) -> str:
    from vqct_tokenizer.training.checkpoint import checkpoint_path

    run = gen_run(args, name, seed)
    if not checkpoint_path(run, args.steps).is_file():
        _run(vqct("train-generator", str(token_dir(args, name, "train")), "-o", str(run),
                  *(["--resume"] if run.exists() else []), "--width", str(args.width), "--depth", str(args.depth),
                  "--heads", str(args.heads), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                  "--lr", str(args.lr), "--warmup-steps", "50", "--seed", str(seed), "--precision", args.precision,
                  "--threads", "1", "--log-every", "50", "--ckpt-every", str(max(args.steps // 4, 1)),
                  "--no-progress"), run.parent / f"seed{seed}.log")
    report = report_path(args, name, seed)
    if not (report.is_file() and json.loads(report.read_text()).get("steps") == args.steps):
        _run([sys.executable, __file__, "--eval-one", name, str(seed), str(report_path(args, name, seed)),
              "--runs-dir", args.runs_dir, "--data-root", args.data_root, "--samples", str(args.samples),
              "--steps", str(args.steps)], run.parent / f"seed{seed}_eval.log")
    return f"generator {name}/seed{seed}"


# ------------------------------------------------------------------------------------- measuring
def _images(args, split: str, tok, limit: int | None = None):
    """(N, 3, 64, 64) in [0, 1]: the birds227 split as the tokenizer's processor resizes it."""
    import torch

    from vqct_tokenizer.evaluation.evaluate import iter_batches, list_images

    paths = list_images(Path(args.data_root) / "birds227" / f"{split}.txt")
    if limit is not None:  # an even spread over the class-sorted list
        paths = paths[:: max(len(paths) // limit, 1)][:limit]
    unreadable: list[str] = []
    out = torch.cat(list(iter_batches(paths, tok.image_processor, 64, unreadable)))
    if unreadable:
        raise RuntimeError(f"unreadable images: {unreadable[:3]}")
    return out


def _stats(net, images):
    import torch

    from vqct_tokenizer.evaluation.features import EFFNET_FEATURE_DIM, GaussianStats, effnet_pooled

    stats = GaussianStats(EFFNET_FEATURE_DIM)
    with torch.no_grad():
        for i in range(0, len(images), 100):
            stats.update(effnet_pooled(net, images[i:i + 100]))
    return stats


def _tokenizer(args, name: str):
    from vqct_tokenizer import VQCTTokenizer

    tok = VQCTTokenizer.from_pretrained(str(tok_export(args, name)))
    tok.decode_precision = "fp32"  # figures must not depend on the CPU's bf16 support
    return tok.eval()


def measure_floors(args, name: str, report: Path) -> None:
    """FD of real train images vs test, and of the tokenizer's reconstructions of test vs test."""
    import torch

    from vqct_tokenizer.evaluation.features import frechet_from_stats, load_effnet_lite0
    from vqct_tokenizer.generation.train import load_grids

    torch.set_num_threads(1)
    tok, net = _tokenizer(args, name), load_effnet_lite0()
    test = _images(args, "test", tok)
    test_stats = _stats(net, test)
    train = _images(args, "train", tok, limit=args.samples)
    chosen = test[:: max(len(test) // args.samples, 1)][: args.samples]
    with torch.no_grad():
        recon = torch.cat([_reconstruct(tok, chosen[i:i + 64]) for i in range(0, len(chosen), 64)])
    _, grids = load_grids(token_dir(args, name, "test"))
    entropy = _token_entropy_bits(grids, tok)
    out = {"tokenizer": name, "samples": args.samples, "test_images": len(test),
           "fd_train_vs_test": frechet_from_stats(_stats(net, train), test_stats),
           "fd_recon_vs_test": frechet_from_stats(_stats(net, recon), test_stats),
           "recon_psnr": float(-10 * torch.log10(((recon - chosen) ** 2).mean(dim=(1, 2, 3))).mean()),
           **entropy}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(out, indent=1) + "\n")
    torch.save(test_stats.__dict__, tok_run(args, name) / "test_stats.pt")


def _reconstruct(tok, x):
    """(B, 3, 64, 64) -> the tokenizer's reconstruction, decoded in float32."""
    import torch

    with torch.no_grad():
        ids = tok.encode_preprocessed(x * 2 - 1, precision="fp32")  # the processor gives [0, 1], the encoder takes [-1, 1]
        return _decode(tok, ids)


def _to_pil(x):
    from PIL import Image

    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))


def _decode(tok, ids):
    """(B, h, w, k+1) ids -> (B, 3, H, W) in [0, 1], decoded in float32."""
    return tok.decode(ids, output_type="pt", precision="fp32").clamp(0, 1)


def _token_entropy_bits(grids, tok) -> dict[str, float]:
    """Bits per image if every slot were coded with its group's marginal frequencies on the test
    tokens: the rate a model that ignores all context would pay (an upper anchor for NLL)."""
    import torch

    flat = grids.reshape(len(grids), -1, grids.shape[-1])
    total, slots = 0.0, _slot_names(tok)
    for g in tok.config.groups:
        cols = flat[..., [i for i, n in enumerate(slots) if n == g.name]].reshape(-1)
        counts = torch.bincount(cols - g.code_start, minlength=g.code_end - g.code_start).double()
        p = counts[counts > 0] / counts.sum()
        total += float(-(p * p.log2()).sum()) * cols.numel() / len(grids)
    return {"marginal_entropy_bits_per_image": total,
            "raw_bits_per_image": float(sum(math.log2(g.code_end - g.code_start) * g.k for g in tok.config.groups)
                                        * flat.shape[1])}


def _slot_names(tok) -> list[str]:
    return [g.name for g in tok.config.groups for _ in range(g.k)]


def measure_generator(args, name: str, seed: int, report: Path) -> None:
    import torch

    from vqct_tokenizer.evaluation.features import GaussianStats, frechet_from_stats, load_effnet_lite0
    from vqct_tokenizer.generation import TokenGenerator
    from vqct_tokenizer.generation.train import evaluate_bits, load_grids
    from vqct_tokenizer.cli.generator import image_grid

    torch.set_num_threads(1)
    run = gen_run(args, name, seed)
    gen = TokenGenerator.from_pretrained(run / "generator")
    tok, net = _tokenizer(args, name), load_effnet_lite0()
    _, test_grids = load_grids(token_dir(args, name, "test"))
    _, train_grids = load_grids(token_dir(args, name, "train"))
    bits = evaluate_bits(gen, test_grids)["bits_per_image"]
    train_bits = evaluate_bits(gen, train_grids[:1000])["bits_per_image"]
    rng = torch.Generator().manual_seed(1000 + seed)
    samples = torch.cat([gen.sample(min(250, args.samples - i), generator=rng) for i in range(0, args.samples, 250)])
    assert int(samples.min()) >= 0 and int(samples.max()) < tok.config.codebook_size
    with torch.no_grad():
        images = torch.cat([_decode(tok, samples[i:i + 100]) for i in range(0, len(samples), 100)])
    saved = torch.load(tok_run(args, name) / "test_stats.pt", weights_only=True)
    test_stats = GaussianStats(saved["mean"].numel())
    test_stats.__dict__.update(saved)
    fd = frechet_from_stats(_stats(net, images), test_stats)
    grid_path = report.with_name(f"{name}_seed{seed}_samples.png")
    report.parent.mkdir(parents=True, exist_ok=True)
    image_grid([_to_pil(im) for im in images[:64]], columns=8).save(grid_path)
    out = {"tokenizer": name, "seed": seed, "steps": args.steps, "samples": len(samples),
           "test_bits_per_image": bits, "train_bits_per_image": train_bits, "fd_samples_vs_test": fd,
           "generator_parameters": sum(p.numel() for p in gen.parameters()), "grid": grid_path.name}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(out, indent=1) + "\n")


# ------------------------------------------------------------------------------------- report
def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def paired(diffs: list[float], lower_is_better: bool) -> str:
    if len(diffs) < 2:
        return "n/a (one seed)"
    m, s = mean_std(diffs)
    t = m / (s / math.sqrt(len(diffs))) if s > 0 else math.copysign(math.inf, m)
    better = (m < 0) if lower_is_better else (m > 0)
    wins = sum((d < 0) if lower_is_better else (d > 0) for d in diffs)
    if abs(t) >= T_CRIT.get(len(diffs) - 1, 2.0):
        verdict = "yes" if better else "no, worse"
    elif wins in (0, len(diffs)):
        verdict = f"{'better' if better else 'worse'} in {len(diffs)}/{len(diffs)}, not significant"
    else:
        verdict = "no clear difference"
    return f"{verdict}: {m:+.1f} ± {s:.1f} (t = {t:.1f})"


def aggregate(args) -> dict:
    runs_dir = Path(f"{args.output}_runs")
    summary: dict = {}
    for name in args.tokenizers:
        floors = runs_dir / f"{name}_floors.json"
        seeds = {}
        for s in args.seeds:
            p = runs_dir / f"{name}_seed{s}.json"
            if p.is_file():
                seeds[s] = json.loads(p.read_text())
        summary[name] = {"floors": json.loads(floors.read_text()) if floors.is_file() else None, "seeds": seeds}
    claims = []
    for title, a, b in CLAIMS:
        if a not in summary or b not in summary:
            continue
        common = sorted(set(summary[a]["seeds"]) & set(summary[b]["seeds"]))
        row = {"claim": title, "seeds": common}
        for key in ("fd_samples_vs_test", "test_bits_per_image"):
            row[key] = paired([summary[a]["seeds"][s][key] - summary[b]["seeds"][s][key] for s in common], True)
        claims.append(row)
    return {"settings": {k: getattr(args, k) for k in ("tokenizer_steps", "steps", "batch_size", "width", "depth",
                                                       "heads", "lr", "samples", "seeds")},
            "summary": summary, "claims": claims}


def tables(agg: dict) -> str:
    st = agg["settings"]
    lines = [f"Birds 64x64 (birds227 train 2,999 / test 2,903), CUB-only prior. Tokenizers: {st['tokenizer_steps']} "
             f"steps of batch 8, seed 0, the fixed recipe. Generators: unconditional GPT, width {st['width']}, depth "
             f"{st['depth']}, {st['steps']} steps of batch {st['batch_size']}, lr {st['lr']}; mean ± std over generator "
             f"seeds. FD-EffNetL0: Fréchet distance on EfficientNet-Lite0 features of {st['samples']} images "
             "against the 2,903 test images at 64x64 (not Inception: not comparable to published FID).", "",
             "| tokenizer | recon PSNR (dB) | FD recon vs test | FD real train vs test | token entropy, bits/image "
             "| seeds | test NLL, bits/image | train NLL, bits/image | FD samples vs test |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in agg["summary"].items():
        f, seeds = entry["floors"] or {}, list(entry["seeds"].values())
        pm = lambda key, fmt: ("{} ± {}".format(fmt.format(mean_std([r[key] for r in seeds])[0]),
                                                fmt.format(mean_std([r[key] for r in seeds])[1])) if seeds else "–")
        lines.append(f"| {name} | {f.get('recon_psnr', float('nan')):.2f} | {f.get('fd_recon_vs_test', float('nan')):.1f}"
                     f" | {f.get('fd_train_vs_test', float('nan')):.1f} | "
                     f"{f.get('marginal_entropy_bits_per_image', float('nan')):.0f} of "
                     f"{f.get('raw_bits_per_image', float('nan')):.0f} | {len(seeds)} | "
                     f"{pm('test_bits_per_image', '{:.0f}')} | {pm('train_bits_per_image', '{:.0f}')} | "
                     f"{pm('fd_samples_vs_test', '{:.1f}')} |")
    lines += ["", "Paired over generator seeds (variant − reference; lower is better for both). 'yes': a two-sided "
              "paired t-test at 5 %.", "", "| claim | FD samples vs test | test NLL (bits/image) |", "|---|---|---|"]
    for c in agg["claims"]:
        lines.append(f"| {c['claim']} | {c['fd_samples_vs_test']} | {c['test_bits_per_image']} |")
    return "\n".join(lines) + "\n"


def comparison_panel(args, path: Path, seed: int = 0, n: int = 16) -> None:
    """One PNG: n real test birds beside the first n samples of each tokenizer's generator (``seed``)."""
    from PIL import Image, ImageDraw

    from vqct_tokenizer.cli.generator import image_grid
    from vqct_tokenizer.evaluation.evaluate import list_images

    side, gap, columns = 64, 2, int(math.sqrt(n))
    crop = columns * (side + gap) - gap          # the top-left columns x columns block of a sample grid
    paths = list_images(Path(args.data_root) / "birds227" / "test.txt")
    real = [Image.open(p).convert("RGB").resize((side, side), Image.BICUBIC) for p in paths[:: len(paths) // n][:n]]
    panels = [("real test images", image_grid(real, columns=columns))]
    for name in args.tokenizers:
        grid = Path(f"{args.output}_runs") / f"{name}_seed{seed}_samples.png"
        if grid.is_file():
            panels.append((f"{name} samples", Image.open(grid).convert("RGB").crop((0, 0, crop, crop))))
    label, margin = 16, 8
    canvas = Image.new("RGB", (len(panels) * (crop + margin) - margin, crop + label), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (title, im) in enumerate(panels):
        x = i * (crop + margin)
        draw.text((x, 2), title, fill=(0, 0, 0))
        canvas.paste(im, (x, label))
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floors_one:
        measure_floors(args, args.floors_one[0], Path(args.floors_one[1]))
        return 0
    if args.eval_one:
        measure_generator(args, args.eval_one[0], int(args.eval_one[1]), Path(args.eval_one[2]))
        return 0
    if not args.report_only:
        from tqdm import tqdm

        # seed-major, so that a cut-off sweep has whole seeds; a tokenizer is prepared by the first
        # job that needs it, while the other worker trains generators of the ones already there
        locks = {n: threading.Lock() for n in args.tokenizers}

        def job(name: str, seed: int) -> str:
            with locks[name]:
                prepare_tokenizer(args, name)
            return train_and_eval(args, name, seed)

        jobs = [(n, s) for s in args.seeds for n in args.tokenizers]
        with ThreadPoolExecutor(args.jobs) as pool:
            for done in tqdm(pool.map(lambda j: job(*j), jobs), total=len(jobs), desc="generators"):
                print(done, flush=True)
    agg = aggregate(args)
    Path(f"{args.output}.json").write_text(json.dumps(agg, indent=1) + "\n")
    Path(f"{args.output}.md").write_text(tables(agg))
    comparison_panel(args, Path(f"{args.output}_samples.png"))
    print(tables(agg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
