"""Quality at equal budget: train (or resume) several variants with identical settings, evaluate each
on the same test splits, and write one table, one JSON and a rate-distortion plot.

Every variant is a shipped training config that differs from the others only in its ``codebook``
section, so architecture, data order, seed, batch and steps are identical by construction.

    python benchmarks/compare_variants.py \\
        --variants faces64 faces64-vqgan faces64-ratematched faces64-randomprior faces64-mlp \\
        --train-data ../shared/data/faces256/train.txt --steps 4000 \\
        --eval faces=../shared/data/faces256/test.txt --eval birds=../shared/data/birds227/test.txt \\
        --runs-dir runs/compare -o benchmarks/results/compare

``--runs VARIANT=DIR`` evaluates an existing run folder instead of ``--runs-dir/VARIANT`` (or an
exported tokenizer folder, e.g. shipped weights exported at ``--steps``); ``--no-train`` never trains,
it only evaluates the checkpoint at exactly ``--steps``. A report already written for the same
model, data, stride and limit is reused (``--fresh`` re-evaluates), so the script can be rerun as
variants finish training and only evaluates what is new.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw

from vqct_tokenizer.evaluation.evaluate import evaluate
from vqct_tokenizer.training.checkpoint import checkpoint_path
from vqct_tokenizer.training.export import tokenizer_from_checkpoint

COLUMNS = [("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("ms_ssim", "MS-SSIM", "{:.4f}"),
           ("fd_effnet_l0", "FD-EffNetL0", "{:.2f}")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", required=True, help="shipped config names (or config files)")
    p.add_argument("--train-data", help="training images (folder or list file)")
    p.add_argument("--steps", type=int, required=True, help="the equal budget: every variant is evaluated at this step")
    p.add_argument("--eval", action="append", default=[], metavar="NAME=DATA", required=True,
                   help="an evaluation split, e.g. faces=../shared/data/faces256/test.txt (repeatable)")
    p.add_argument("--runs-dir", default="runs/compare")
    p.add_argument("--runs", action="append", default=[], metavar="VARIANT=DIR", help="use an existing run folder")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="applied to every variant")
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N images of each split")
    p.add_argument("--stride", action="append", default=[], metavar="SPLIT=K",
                   help="evaluate every K-th image of that split (an even spread over class-sorted lists)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--jobs", type=int, default=1, help="evaluations run in parallel, one torch thread each")
    p.add_argument("--fresh", action="store_true", help="re-evaluate even where a matching report exists")
    p.add_argument("-o", "--output", default="benchmarks/results/compare", help="output prefix")
    return p.parse_args(argv)


def run_dir_for(variant: str, args: argparse.Namespace) -> Path:
    explicit = dict(item.split("=", 1) for item in args.runs)
    return Path(explicit.get(variant, Path(args.runs_dir) / Path(variant).stem))


def train_variant(variant: str, out: Path, args: argparse.Namespace) -> None:
    if checkpoint_path(out, args.steps).is_file() or args.no_train:
        return
    if not args.train_data:
        raise SystemExit(f"{variant}: no checkpoint at step {args.steps} in {out} and no --train-data to train it")
    cmd = [sys.executable, "-m", "vqct_tokenizer", "train", "--config", variant, "--resume",
           f"data.train={args.train_data}", f"run.out_dir={out}", *args.override]
    cmd.append(f"--max-steps={args.steps}")  # the schedule's own steps stay as configured
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    splits = dict(item.split("=", 1) for item in args.eval)
    strides = {k: int(v) for k, v in (item.split("=", 1) for item in args.stride)}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = []
    for variant in args.variants:
        run_dir = run_dir_for(variant, args)
        if is_exported(run_dir):
            model = run_dir
        else:
            train_variant(variant, run_dir, args)
            model = checkpoint_path(run_dir, args.steps)
            if not model.is_file():
                raise SystemExit(f"{variant}: {model} does not exist; the equal-budget comparison needs step {args.steps}")
        for split, data in splits.items():
            report_path = out.parent / f"{out.name}_{Path(variant).stem}_{split}.json"
            jobs.append((Path(variant).stem, split, str(model), data, report_path, strides.get(split, 1)))
    reports: list[dict | None] = [None if args.fresh else reusable_report(job, args.limit) for job in jobs]
    todo = [i for i, report in enumerate(reports) if report is None]
    for i, job in enumerate(jobs):
        if reports[i] is not None:
            print(f"reusing {job[4]} ({job[0]} on {job[1]})", flush=True)
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_one_thread) as pool:
            futures = {i: pool.submit(_evaluate_job, jobs[i], args.limit, args.batch_size, False) for i in todo}
            for i, future in futures.items():
                reports[i] = future.result()
    else:
        for i in todo:
            reports[i] = _evaluate_job(jobs[i], args.limit, args.batch_size, True)
    rows = [{"variant": variant, "split": split, "steps": args.steps, "model": model,
             "count": report["data"]["count"], "resolution": report["data"]["resolution"],
             "metrics": report["metrics"], "rate": report["rate"], "usage": report["usage"]}
            for (variant, split, model, *_), report in zip(jobs, reports)]
    Path(f"{out}.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    Path(f"{out}.md").write_text(table + "\n")
    rate_distortion_plot(rows, Path(f"{out}_rd.png"))
    print(table)
    return 0


def reusable_report(job: tuple, limit: int | None) -> dict | None:
    """The report at the job's path when it evaluated the same model on the same data, else None."""
    _, _, model, data, report_path, stride = job
    try:
        report = json.loads(Path(report_path).read_text())
        same = (report["model"]["id"] == str(model) and report["data"]["source"] == str(data)
                and report["data"]["stride"] == stride and report["data"]["limit"] == limit)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return report if same else None


def is_exported(folder: Path) -> bool:
    from vqct_tokenizer.model_files import has_weights

    return (folder / "config.json").is_file() and has_weights(folder)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # parallel jobs on few cores: one thread each beats oversubscription


def _evaluate_job(job: tuple, limit: int | None, batch_size: int, progress: bool) -> dict:
    _, _, model, data, report_path, stride = job
    return evaluate(model, data, limit=limit, stride=stride, batch_size=batch_size, report_path=report_path,
                    progress=progress, checkpoint_loader=tokenizer_from_checkpoint)


def _usage_cell(usage: dict) -> str:
    return ", ".join(f"{name} {g['used_percent']:.1f}%" for name, g in usage["groups"].items())


def markdown_table(rows: list[dict]) -> str:
    head = ["variant", "split", "N", *(c[1] for c in COLUMNS), "code usage", "bits/image", "entropy bits/image (marginal)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        vals = [fmt.format(m[k]) if isinstance(m.get(k), (int, float)) else "n/a" for k, _, fmt in COLUMNS]
        rate = r["rate"]
        lines.append("| " + " | ".join([r["variant"], r["split"], str(r["count"]), *vals, _usage_cell(r["usage"]),
                                        f"{rate['bits_per_image']:.0f}", f"{_entropy(rate):.0f}"]) + " |")
    return "\n".join(lines)


def _entropy(rate: dict) -> float:
    """Per-slot (marginal) empirical entropy: the joint estimate is biased low on small splits."""
    return float(rate["entropy_bits_per_image_marginal"])


PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def rate_distortion_plot(rows: list[dict], path: Path, panel: tuple[int, int] = (460, 420)) -> None:
    """PSNR against bits per image: one panel per split, one colour per variant, drawn with PIL.

    Several variants share a rate (every dual-codebook variant spends the same bits), so markers are
    labelled in a legend, not beside the points, and points at one rate are spread a little sideways.
    """
    pts = [r for r in rows if isinstance(r["metrics"].get("psnr"), (int, float)) and math.isfinite(r["metrics"]["psnr"])]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    splits = list(dict.fromkeys(r["split"] for r in rows)) or ["-"]
    colour = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}
    legend_w = 250
    img = Image.new("RGB", (panel[0] * len(splits) + legend_w, panel[1]), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 6), "Rate-distortion at equal training budget: PSNR vs bits per image (log2 scale)", fill="black")
    xs_all = [math.log2(max(r["rate"]["bits_per_image"], 1.0)) for r in pts] or [0.0]
    x0, x1 = min(xs_all) - 0.4, max(xs_all) + 0.4
    for j, split in enumerate(splits):
        here = [r for r in pts if r["split"] == split]
        ox = j * panel[0]
        if not here:
            draw_rd_panel(d, ox, panel, split)
            continue
        ys = [r["metrics"]["psnr"] for r in here]
        sx, sy = draw_rd_panel(d, ox, panel, split, (x0, x1), (min(ys) - 0.5, max(ys) + 0.5))
        seen_at: dict[float, int] = {}
        for r in here:
            bits = r["rate"]["bits_per_image"]
            nth = seen_at.get(round(bits), 0)
            seen_at[round(bits)] = nth + 1
            x = sx(math.log2(max(bits, 1.0))) + (nth - 1.5) * 7 * (nth > 0)
            y = sy(r["metrics"]["psnr"])
            d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour[r["variant"]])
    lx = panel[0] * len(splits) + 10
    d.text((lx, 40), "variant: PSNR dB (" + ", ".join(splits) + ")", fill="black")
    for i, v in enumerate(variants):
        y = 62 + i * 22
        d.ellipse([lx, y, lx + 10, y + 10], fill=colour[v])
        values = []
        for split in splits:
            match = [r for r in pts if r["variant"] == v and r["split"] == split]
            values.append(f"{match[0]['metrics']['psnr']:.2f}" if match else "-")
        bits = next((r["rate"]["bits_per_image"] for r in rows if r["variant"] == v), float("nan"))
        d.text((lx + 16, y - 1), f"{v}: {' / '.join(values)}  ({bits:.0f} b)", fill=colour[v])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def draw_rd_panel(d: ImageDraw.ImageDraw, ox: int, panel: tuple[int, int], title: str,
                  x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None):
    """One rate-distortion panel at x offset ``ox``: frame, title, axis label and, given the ranges
    (x in log2 bits, y in dB), five ticks a side; returns the (x, y) -> pixel maps."""
    left, top, right, bottom = ox + 55, 40, ox + panel[0] - 15, panel[1] - 45
    d.rectangle([left, top, right, bottom], outline="black")
    d.text(((left + right) // 2 - 20, 24), title, fill="black")
    d.text(((left + right) // 2 - 40, bottom + 24), "bits per image", fill="black")
    if x_range is None or y_range is None:
        return None
    (x0, x1), (y0, y1) = x_range, y_range
    sx = lambda v: left + (v - x0) / (x1 - x0) * (right - left)  # noqa: E731
    sy = lambda v: bottom - (v - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    for t in range(5):
        xv, yv = x0 + t * (x1 - x0) / 4, y0 + t * (y1 - y0) / 4
        d.text((sx(xv) - 12, bottom + 6), f"{2 ** xv:.0f}", fill="gray")
        d.text((ox + 8, sy(yv) - 6), f"{yv:.1f}", fill="gray")
        d.line([left, sy(yv), right, sy(yv)], fill="#eeeeee")
    return sx, sy


if __name__ == "__main__":
    sys.exit(main())
