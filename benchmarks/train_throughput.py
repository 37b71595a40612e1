"""Training speed: the shipped recipe as it ran (fp32, one thread) against today's default setup.

    python benchmarks/train_throughput.py --data faces=../shared/data/faces256/train.txt \
        --data open=../shared/data/open/train.txt -o benchmarks/results/train_throughput.json

For each config (faces64 on faces, open-f8 on open photos) and each setup, one fresh process runs
``vqct_tokenizer.training.trainer.train`` for ``--steps`` steps from the same seed, so both setups
see the same images in the same order. Throughput is images/s from the trainer's own log windows,
after the first (warm-up) window; with ``--gan-from`` the discriminator starts mid-run and the two
phases are timed separately. Setups run one after the other, never side by side, and the machine
should be otherwise idle. The loss check compares the reconstruction loss (L1) and the total loss
of the two setups averaged over the last ``--compare-last`` steps: bf16 changes rounding, so the
curves are not identical, but they should stay close.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUPS = {
    # What round 1 shipped: fp32, one torch thread, contiguous tensors.
    "shipped-r1": ["run.precision=fp32", "run.threads=1", "run.channels_last=false"],
    # Today's default: bf16 autocast (AMX/AVX512-BF16 here), channels-last, every core.
    "default": ["run.precision=auto", "run.threads=0", "run.channels_last=true"],
}

CONFIGS = {"faces": "faces64", "open": "open-f8"}

CHILD = """
import json, sys
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.trainer import train
cfg = load_config(sys.argv[1], sys.argv[2:])
train(cfg)
"""


def run_setup(config: str, data: str, setup: str, steps: int, log_every: int, gan_from: int | None,
              workdir: Path) -> list[dict]:
    out = workdir / f"{config}-{setup}"
    overrides = [f"data.train={data}", f"run.out_dir={out}", f"optim.steps={steps}", "run.ckpt_every=0",
                 "run.image_every=0", f"run.log_every={log_every}", "data.workers=0", *SETUPS[setup]]
    if gan_from is not None:
        overrides.append(f"loss.disc_start={gan_from}")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, config, *overrides], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    print(f"  {config:<8} {setup:<10} {steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def phase_rate(rows: list[dict], lo: int, hi: int) -> float | None:
    """Mean images/s over log windows ending in (lo, hi], weighting windows equally."""
    rates = [r["img_per_s"] for r in rows if lo < r["step"] <= hi]
    return sum(rates) / len(rates) if rates else None


def mean_over(rows: list[dict], key: str, lo: int) -> float:
    vals = [r[key] for r in rows if r["step"] > lo and r.get(key) is not None]
    return sum(vals) / len(vals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="NAME=LIST",
                        help="training data per config: faces=..., open=...")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--gan-from", type=int, default=100,
                        help="faces64: start the discriminator at this step, to time both phases (default: 100)")
    parser.add_argument("--compare-last", type=int, default=50)
    parser.add_argument("-o", "--output")
    args = parser.parse_args(argv)

    import torch

    data = dict(item.split("=", 1) for item in args.data)
    report: dict = {"steps": args.steps, "setups": SETUPS, "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "load_before": os.getloadavg(), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data_list in data.items():
            config = CONFIGS[name]
            gan_from = args.gan_from if name == "faces" else None
            logs = {s: run_setup(config, data_list, s, args.steps, args.log_every, gan_from, Path(tmp)) for s in SETUPS}
            res: dict = {"config": config, "gan_from": gan_from, "setups": {}}
            first = args.log_every  # the first window includes warm-up
            phases = [("no GAN", first, gan_from or args.steps)] + ([("GAN", gan_from + args.log_every, args.steps)]
                                                                    if gan_from else [])
            for setup, rows in logs.items():
                res["setups"][setup] = {
                    "img_per_s": {p: phase_rate(rows, lo, hi) for p, lo, hi in phases},
                    "rec_last": mean_over(rows, "rec", args.steps - args.compare_last),
                    "loss_last": mean_over(rows, "loss", args.steps - args.compare_last),
                    "curve": [(r["step"], r["rec"], r["loss"]) for r in rows],
                }
            base, new = res["setups"]["shipped-r1"], res["setups"]["default"]
            res["speedup"] = {p: new["img_per_s"][p] / base["img_per_s"][p] for p, _, _ in phases}
            res["rec_rel_diff"] = new["rec_last"] / base["rec_last"] - 1
            res["loss_rel_diff"] = new["loss_last"] / base["loss_last"] - 1
            report["results"][name] = res
    report["load_after"] = os.getloadavg()

    print(f"\ntorch {report['torch']}, {report['cpu_count']} CPUs, {args.steps} steps per run, "
          f"load {report['load_before'][0]:.2f} -> {report['load_after'][0]:.2f}")
    print(f"{'config':<9}{'phase':<8}{'shipped-r1 img/s':>17}{'default img/s':>15}{'speed-up':>10}"
          f"{'L1 last-' + str(args.compare_last):>14}{'rel diff':>10}")
    for name, res in report["results"].items():
        base, new = res["setups"]["shipped-r1"], res["setups"]["default"]
        for phase, speedup in res["speedup"].items():
            print(f"{res['config']:<9}{phase:<8}{base['img_per_s'][phase]:>17.1f}{new['img_per_s'][phase]:>15.1f}"
                  f"{speedup:>9.2f}x{new['rec_last']:>14.4f}{res['rec_rel_diff']:>+10.1%}")
        print(f"{'':<9}L1 over the last {args.compare_last} steps: shipped-r1 {base['rec_last']:.4f}, "
              f"default {new['rec_last']:.4f}; total loss {base['loss_last']:.4f} vs {new['loss_last']:.4f} "
              f"({res['loss_rel_diff']:+.1%})")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
