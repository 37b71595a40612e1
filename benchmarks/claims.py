"""The paper's claims at equal budget, three seeds, on birds (its own domain) and faces.

One command trains every (domain, variant, seed) run it does not find finished, evaluates each on the
same test images, and writes the tables, the paired verdicts and a rate-distortion plot with error
bars to ``benchmarks/results/claims*``:

    python benchmarks/claims.py --data-root ../shared/data --steps 800 --seeds 0 1 2 --jobs 2

Every variant is a shipped training config that differs from ``faces64`` only in its ``codebook``
section (and ``model.codebook_dim`` for the learned baseline's low-dimensional lookup), so the
network, losses, batch, steps and, for one seed, the initial weights of the shared parts and the data
order are the same by construction. Birds runs use the prior mined from the CUB captions only
(``codebook.prior=minilm-cub``, i.e. the ``birds64`` config); faces runs use the default prior.

Variants:
  vqct            VQCT: language prior (MiniLM word vectors), GCN transfer, adjective/noun split
  random-vectors  the same graph and GCN fed frozen random vectors of the same shape and norm
  learned-strong  the same token layout and rate, codebooks learned from scratch with cosine lookup in
                  32 dims, k-means start, EMA updates and dead-code restart (faces64-learned-strong)
  vqgan-k1024     plain VQGAN, one learned codebook of 1,024 codes (a different rate)
  single          VQCT with one shared codebook of all words for all three slots (birds only)
  vqct-cosine     VQCT with learned-strong's lookup: l2-normalised latents and codes in 32 dims
                  (faces64-cosine); the codebook is still the GCN's transfer of the word vectors

Runs go two at a time (``--jobs``), one torch thread each; a run is resumed from its last checkpoint,
and a finished run whose report exists is not evaluated again, so the command can be rerun after an
interruption and only does what is missing. ``--report-only`` never trains or evaluates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw

from compare_variants import draw_rd_panel  # one panel style for both rate-distortion plots

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "vqct": "faces64",
    "random-vectors": "faces64-randomprior",
    "learned-strong": "faces64-learned-strong",
    "vqgan-k1024": "faces64-vqgan",
    "single": "faces64-single",
    "vqct-cosine": "faces64-cosine",
}
DOMAINS = {
    # train list, test list, evaluation stride (an even spread over class-sorted lists), overrides
    "birds": {"train": "birds227/train.txt", "test": "birds227/test.txt", "stride": 10,
              "overrides": ["codebook.prior=minilm-cub"],
              "variants": ["vqct", "random-vectors", "learned-strong", "vqgan-k1024", "single", "vqct-cosine"]},
    "faces": {"train": "faces256/train.txt", "test": "faces256/test.txt", "stride": 3, "overrides": [],
              "variants": ["vqct", "random-vectors", "learned-strong", "vqgan-k1024", "vqct-cosine"]},
}
METRICS = [("psnr", "PSNR", "{:.2f}", +1), ("ssim", "SSIM", "{:.4f}", +1), ("ms_ssim", "MS-SSIM", "{:.4f}", +1),
           ("fd_effnet_l0", "FD-EffNetL0", "{:.2f}", -1)]
# (name, variant, reference): does ``variant`` beat ``reference``?
CLAIMS = [
    ("language prior beats random word vectors", "vqct", "random-vectors"),
    ("transfer beats the strongest learned codebook at equal rate", "vqct", "learned-strong"),
    ("the adjective/noun split beats one shared codebook", "vqct", "single"),
    ("VQCT beats plain VQGAN K=1024 (VQCT spends more bits)", "vqct", "vqgan-k1024"),
    ("the cosine lookup helps VQCT", "vqct-cosine", "vqct"),
    ("transfer beats the strongest learned codebook, both with the cosine lookup in 32 dims",
     "vqct-cosine", "learned-strong"),
]
# two-sided 5 % critical values of Student's t by degrees of freedom (n paired runs - 1)
T_CRIT = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=os.environ.get("VQCT_DATA", "../shared/data"),
                   help="folder holding birds227/ and faces256/ (default: $VQCT_DATA or ../shared/data)")
    p.add_argument("--steps", type=int, default=800, help="the equal budget, in optimizer steps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="only these variants (default: every variant of each domain)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    p.add_argument("--runs-dir", default="runs/claims")
    p.add_argument("-o", "--output", default="benchmarks/results/claims", help="output prefix")
    p.add_argument("--report-only", action="store_true", help="only aggregate the reports already written")
    p.add_argument("--eval-one", nargs=4, metavar=("CHECKPOINT", "DATA", "STRIDE", "REPORT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> list[dict]:
    """Seed-major, so that an interrupted sweep has whole seeds rather than whole variants."""
    runs = []
    for seed in args.seeds:
        for domain in args.domains:
            spec = DOMAINS[domain]
            for variant in spec["variants"]:
                if args.variants and variant not in args.variants:
                    continue
                runs.append({"domain": domain, "variant": variant, "seed": seed, "config": VARIANTS[variant],
                             "run_dir": Path(args.runs_dir) / domain / variant / f"seed{seed}",
                             "report": Path(f"{args.output}_runs") / f"{domain}_{variant}_seed{seed}.json"})
    return runs


def execute(run: dict, args: argparse.Namespace) -> str:
    from vqct_tokenizer.training.checkpoint import checkpoint_path

    spec, root = DOMAINS[run["domain"]], Path(args.data_root)
    run["run_dir"].mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(run["run_dir"], args.steps)
    # the package of this checkout, not whichever one is installed: the sweep may run from a snapshot
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if not ckpt.is_file():
        cmd = [sys.executable, "-m", "vqct_tokenizer", "train", "--config", run["config"], "--resume",
               f"data.train={root / spec['train']}", f"run.out_dir={run['run_dir']}", f"run.seed={run['seed']}",
               f"optim.steps={args.steps}", "run.threads=1", f"run.ckpt_every={max(args.steps // 2, 1)}",
               "run.keep=2", f"run.image_every={max(args.steps // 2, 1)}", *spec["overrides"]]
        with open(run["run_dir"] / "train.log", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    if not _report_matches(run["report"], ckpt):
        cmd = [sys.executable, __file__, "--eval-one", str(ckpt), str(root / spec["test"]), str(spec["stride"]),
               str(run["report"])]
        with open(run["run_dir"] / "eval.log", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    return f"{run['domain']}/{run['variant']}/seed{run['seed']}"


def _report_matches(report: Path, ckpt: Path) -> bool:
    try:
        found = json.loads(report.read_text())
        return found["model"]["id"] == str(ckpt) and "used_participation_ratio" in next(iter(found["codebook_geometry"].values()))
    except (OSError, ValueError, KeyError, StopIteration):
        return False


def evaluate_one(ckpt: str, data: str, stride: int, report: str) -> None:
    """Evaluate one checkpoint and add its codebook's geometry per group: the participation ratio of
    all codes, of the codes chosen on the test images, and the norms of chosen and unchosen codes
    (is a low ratio carried by a few far-out codes nobody uses, or by the used ones?)."""
    import torch
    from PIL import Image as PILImage

    from vqct_tokenizer.evaluation.evaluate import evaluate, list_images, load_model
    from vqct_tokenizer.evaluation.usage import CodeUsage
    from vqct_tokenizer.evaluation.geometry import participation_ratio, top_component_share
    from vqct_tokenizer.training.export import tokenizer_from_checkpoint

    torch.set_num_threads(1)
    Path(report).parent.mkdir(parents=True, exist_ok=True)
    result = evaluate(ckpt, data, stride=stride, batch_size=32, report_path=report, progress=False,
                      external=False, checkpoint_loader=tokenizer_from_checkpoint)
    tok, _ = load_model(ckpt, torch.device("cpu"), tokenizer_from_checkpoint)
    usage = CodeUsage(tok.config)
    with torch.inference_mode():
        for path in list_images(data, stride=stride):
            with PILImage.open(path) as im:
                usage.update(tok.encode(im.convert("RGB")))
    codes = tok.codebook.detach().float()
    geometry = {}
    for g in tok.config.groups:
        group, used = codes[g.code_start:g.code_end], usage.counts[g.name] > 0
        norms = group.norm(dim=1)
        geometry[g.name] = {
            "participation_ratio": participation_ratio(group), "top_component_share": top_component_share(group),
            "used_participation_ratio": participation_ratio(group[used]) if used.sum() > 1 else float("nan"),
            "used_top_component_share": top_component_share(group[used]) if used.sum() > 1 else float("nan"),
            "used_codes": int(used.sum()), "codes": int(group.shape[0]), "dims": int(group.shape[1]),
            "mean_norm_used": float(norms[used].mean()) if used.any() else float("nan"),
            "mean_norm_unused": float(norms[~used].mean()) if (~used).any() else float("nan"),
        }
    result["codebook_geometry"] = geometry
    Path(report).write_text(json.dumps(result, indent=2, default=str) + "\n")


def latent_geometry(run: dict, args: argparse.Namespace) -> dict | None:
    """Participation ratio of the encoder's pre-quantization latents, per group's channels, on every
    ``3 * stride``-th test image: is a low-rank codebook the transfer's doing, or does it mirror the
    latents it is fitted to? Cached beside the run's report."""
    import torch

    from vqct_tokenizer.evaluation.evaluate import list_images
    from vqct_tokenizer.training.checkpoint import checkpoint_path
    from vqct_tokenizer.training.export import tokenizer_from_checkpoint
    from vqct_tokenizer.evaluation.geometry import participation_ratio

    ckpt = checkpoint_path(run["run_dir"], args.steps)
    cache = run["report"].with_name(run["report"].stem + "_latents.json")
    if cache.is_file():
        found = json.loads(cache.read_text())
        if found.get("checkpoint") == str(ckpt):
            return found
    if not ckpt.is_file():
        return None
    spec = DOMAINS[run["domain"]]
    tok = tokenizer_from_checkpoint(ckpt)
    paths = [str(p) for p in list_images(Path(args.data_root) / spec["test"], stride=3 * spec["stride"])]
    with torch.inference_mode():
        z = tok.model.encode_latent(torch.stack(tok.preprocess(paths)[0]))  # (B, G·D, h, w)
    z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
    d = tok.codebook.shape[1]
    found = {"checkpoint": str(ckpt), "images": len(paths), "latents": int(z.shape[0]),
             "groups": {g.name: participation_ratio(z[:, i * d:(i + 1) * d]) for i, g in enumerate(tok.config.groups)}}
    cache.write_text(json.dumps(found, indent=2) + "\n")
    return found


# ----------------------------------------------------------------------------- aggregation

def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def run_values(report: dict) -> dict[str, float]:
    m, rate, usage = report["metrics"], report["rate"], report["usage"]["groups"]
    values = {k: float(m[k]) for k, *_ in METRICS if isinstance(m.get(k), (int, float))}
    values["bits_per_image"] = float(rate["bits_per_image"])
    values["entropy_bits_per_image"] = float(rate["entropy_bits_per_image_marginal"])
    for name, g in usage.items():
        values[f"usage_{name}"] = float(g["used_percent"])
    for name, g in report.get("codebook_geometry", {}).items():
        values[f"pr_{name}"] = float(g["participation_ratio"])
        if "used_participation_ratio" in g:
            values[f"pr_used_{name}"] = float(g["used_participation_ratio"])
    return values


def aggregate(runs: list[dict], args: argparse.Namespace) -> dict:
    per_run = {}
    for run in runs:
        if run["report"].is_file():
            values = run_values(json.loads(run["report"].read_text()))
            latents = latent_geometry(run, args)
            for name, pr in (latents or {}).get("groups", {}).items():
                values[f"latent_pr_{name}"] = float(pr)
            per_run[(run["domain"], run["variant"], run["seed"])] = values
    summary: dict = {}
    for (domain, variant, seed), values in per_run.items():
        summary.setdefault(domain, {}).setdefault(variant, {}).setdefault("seeds", {})[seed] = values
    for domain, variants in summary.items():
        for variant, entry in variants.items():
            keys = sorted({k for v in entry["seeds"].values() for k in v})
            entry["mean_std"] = {k: mean_std([v[k] for v in entry["seeds"].values() if k in v]) for k in keys}
    verdicts = []
    for claim, a, b in CLAIMS:
        pooled: dict[str, list[float]] = {key: [] for key, *_ in METRICS}
        domains = []
        for domain, variants in summary.items():
            if a not in variants or b not in variants:
                continue
            domains.append(domain)
            seeds = sorted(set(variants[a]["seeds"]) & set(variants[b]["seeds"]))
            row = {"domain": domain, "claim": claim, "variant": a, "reference": b, "seeds": seeds, "metrics": {}}
            for key, label, _, sign in METRICS:
                diffs = [variants[a]["seeds"][s][key] - variants[b]["seeds"][s][key] for s in seeds
                         if key in variants[a]["seeds"][s] and key in variants[b]["seeds"][s]]
                pooled[key] += diffs
                row["metrics"][key] = paired(diffs, sign)
            verdicts.append(row)
        if len(domains) > 1:  # every (domain, seed) pair as one paired observation
            verdicts.append({"domain": " + ".join(domains), "claim": claim, "variant": a, "reference": b,
                             "metrics": {key: paired(pooled[key], sign) for key, _, _, sign in METRICS}})
    return {"summary": summary, "verdicts": verdicts}


def paired(diffs: list[float], sign: int) -> dict:
    """Paired differences (variant - reference) over seeds; ``sign`` is +1 where higher is better.

    "yes" / "no, worse": a two-sided paired t-test at 5 %. Otherwise the cell says how many seeds
    went which way: with three seeds even a 3-of-3 result can fall short of significance."""
    if not diffs:
        return {"n": 0, "verdict": "not measured"}
    mean, sd = mean_std(diffs)
    n = len(diffs)
    t = mean / (sd / math.sqrt(n)) if n > 1 and sd > 0 else float("nan")
    better = sum(1 for d in diffs if d * sign > 0)
    if n - 1 in T_CRIT and math.isfinite(t) and abs(t) >= T_CRIT[n - 1]:
        verdict = "yes" if mean * sign > 0 else "no, worse"
    elif better in (0, n) and n > 1:
        verdict = f"{'better' if better else 'worse'} in {n}/{n}, not significant"
    else:
        verdict = "no clear difference"
    return {"n": n, "diffs": diffs, "mean": mean, "std": sd, "t": t, "seeds_better": better, "verdict": verdict}


def tables(agg: dict, steps: int) -> str:
    out = [f"Equal budget: {steps} steps, batch 8, 64x64, one seed = one data order and initialisation shared by"
           " all variants. mean ± std over seeds. FD-EffNetL0 is a Fréchet distance on EfficientNet-Lite0"
           " features (not Inception: not comparable to published FID).", ""]
    for domain, variants in agg["summary"].items():
        out.append(f"### {domain}")
        out.append("")
        head = ["variant", "seeds", *(c[1] for c in METRICS), "bits/image", "entropy bits/image", "code usage %",
                "participation ratio, all codes",
                "participation ratio, codes used on the test images", "participation ratio, encoder latents"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant, entry in variants.items():
            ms = entry["mean_std"]
            cells = [variant, str(len(entry["seeds"]))]
            for key, _, fmt, _ in METRICS:
                cells.append(_pm(ms.get(key), fmt))
            cells.append(f"{ms['bits_per_image'][0]:.0f}")
            cells.append(_pm(ms.get("entropy_bits_per_image"), "{:.0f}"))
            cells.append(", ".join(f"{k[6:]} {_pm(v, '{:.1f}')}" for k, v in ms.items() if k.startswith("usage_")))
            cells.append(", ".join(f"{k[3:]} {_pm(v, '{:.1f}')}" for k, v in ms.items()
                                   if k.startswith("pr_") and not k.startswith("pr_used_")))
            cells.append(", ".join(f"{k[8:]} {_pm(v, '{:.1f}')}" for k, v in ms.items() if k.startswith("pr_used_")))
            cells.append(", ".join(f"{k[10:]} {_pm(v, '{:.1f}')}" for k, v in ms.items() if k.startswith("latent_pr_")))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out.append("### Paired verdicts")
    out.append("")
    out.append("Paired differences (variant − reference) over seeds; rows joining two domains pool every"
               " (domain, seed) pair. 'yes' / 'no, worse': a two-sided paired t-test at 5 % (t ≥ 4.30 for 3"
               " pairs, 2.57 for 6); otherwise how many pairs went which way. mean ± std of the differences.")
    out.append("")
    head = ["domain", "claim", *(c[1] for c in METRICS)]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in agg["verdicts"]:
        cells = [row["domain"], row["claim"]]
        for key, _, fmt, _ in METRICS:
            p = row["metrics"][key]
            cells.append("n/a" if not p["n"] else
                         f"{p['verdict']}: {fmt.format(p['mean'])} ± {fmt.format(p['std'])} (t = {p['t']:.1f})")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _pm(value: tuple[float, float] | None, fmt: str) -> str:
    if value is None:
        return "n/a"
    mean, sd = value
    return fmt.format(mean) + ("" if not math.isfinite(sd) else " ± " + fmt.format(sd))


PALETTE = {"vqct": "#d62728", "random-vectors": "#ff7f0e", "learned-strong": "#1f77b4", "vqgan-k1024": "#2ca02c",
           "single": "#9467bd", "vqct-cosine": "#8c564b"}


def rd_plot(agg: dict, path: Path, panel: tuple[int, int] = (470, 420)) -> None:
    """PSNR (mean ± std over seeds) against bits per image, one panel per domain."""
    domains = list(agg["summary"])
    legend_w = 190
    img = Image.new("RGB", (panel[0] * max(len(domains), 1) + legend_w, panel[1]), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 6), "Rate-distortion at equal budget: PSNR mean ± std over seeds vs bits per image (log2)", fill="black")
    for j, domain in enumerate(domains):
        pts = [(v, e["mean_std"]) for v, e in agg["summary"][domain].items() if "psnr" in e["mean_std"]]
        ox = j * panel[0]
        if not pts:
            draw_rd_panel(d, ox, panel, domain)
            continue
        xs = [math.log2(ms["bits_per_image"][0]) for _, ms in pts]
        lo = [ms["psnr"][0] - _finite(ms["psnr"][1]) for _, ms in pts]
        hi = [ms["psnr"][0] + _finite(ms["psnr"][1]) for _, ms in pts]
        sx, sy = draw_rd_panel(d, ox, panel, domain, (min(xs) - 0.5, max(xs) + 0.5), (min(lo) - 0.3, max(hi) + 0.3))
        same_rate: dict[int, int] = {}
        for (variant, ms), x, a, b in zip(pts, xs, lo, hi):
            nth = same_rate.get(round(ms["bits_per_image"][0]), 0)
            same_rate[round(ms["bits_per_image"][0])] = nth + 1
            px, colour = sx(x) + nth * 9, PALETTE.get(variant, "black")
            d.line([px, sy(a), px, sy(b)], fill=colour, width=2)
            d.line([px - 4, sy(a), px + 4, sy(a)], fill=colour)
            d.line([px - 4, sy(b), px + 4, sy(b)], fill=colour)
            py = sy(ms["psnr"][0])
            d.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
    lx = panel[0] * max(len(domains), 1) + 10
    for i, variant in enumerate(PALETTE):
        y = 50 + i * 22
        d.ellipse([lx, y, lx + 10, y + 10], fill=PALETTE[variant])
        d.text((lx + 16, y - 1), variant, fill=PALETTE[variant])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    args = parse_args(argv)
    if args.eval_one:
        ckpt, data, stride, report = args.eval_one
        evaluate_one(ckpt, data, int(stride), report)
        return 0
    runs = plan(args)
    if not args.report_only:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for done in pool.map(lambda r: execute(r, args), runs):
                print(f"[{time.perf_counter() - start:7.0f}s] done {done}", flush=True)
    agg = aggregate(runs, args)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(["python", "benchmarks/claims.py", *(argv if argv is not None else sys.argv[1:])]),
               "steps": args.steps, "seeds": args.seeds,
               "summary": {d: {v: {"seeds": {str(s): x for s, x in e["seeds"].items()}, "mean_std": e["mean_std"]}
                               for v, e in vs.items()} for d, vs in agg["summary"].items()},
               "verdicts": agg["verdicts"]}
    Path(f"{out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = tables(agg, args.steps)
    Path(f"{out}.md").write_text(text + "\n")
    rd_plot(agg, Path(f"{out}_rd.png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
