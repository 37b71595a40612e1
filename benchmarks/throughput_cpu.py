"""Benchmark: native encode + decode of a 640x427 photo at batch 1 on the CPU, this checkout against
an earlier revision, side by side in one run, with how many tokens and pixels stay the same.

    python benchmarks/throughput_cpu.py                          # against 6ff59c1 (before the speed-up)
    python benchmarks/throughput_cpu.py --baseline-rev HEAD~3 --rounds 5 --photos 50

What runs: ``tok.encode(image, resize=False)`` then ``tok.decode(tokens)``, the Python API a user
calls, on the first ``--timing-photos`` open test photos resized (bicubic) to ``--size``. The test
photos are 384x256, so these are upscaled: smoother than a native photo of that size, which changes
which tokens come out but not the work. Implementations:

* ``before``: the package at ``--baseline-rev`` (a temporary ``git worktree``), its defaults;
* ``after-fp32``: this checkout with ``decode_precision="fp32"``: the same pixels on every machine;
* ``after``: this checkout, its defaults (``decode_precision="auto"``: bfloat16 decoding where the
  CPU has AVX512-BF16 or AMX).

Each (round, implementation) is a fresh process that loads the model from this checkout's
``weights/``, makes one untimed call, then times ``--repeats`` calls per photo (encode and decode
apart; ``torch.set_num_threads(--threads)``). The order of the implementations rotates every round;
the figure is the median over all calls of all rounds, and the speed-up the ratio of medians. On a
shared machine absolute times drift with the load; ratios measured side by side hold better. Do not
run it next to a training job.

Agreement: every implementation encodes the first ``--photos`` photos at ``--size``; reported are
the share of identical token ids against ``before``, and the PSNR of each reconstruction against
the original and against ``before``'s reconstruction (8-bit pixels).

Writes ``benchmarks/results/throughput_cpu.json`` (``-o`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REV = "6ff59c1"  # the last commit before the CPU speed-up (issue 22)
IMPLS = ("before", "after-fp32", "after")


# ------------------------------------------------------------------------------------ child process
def child(args: argparse.Namespace) -> None:
    """Load the package from ``--src``, time or encode the images, write JSON (and .npy) to ``--out``."""
    sys.path.insert(0, str(args.src))
    import torch

    import vqct_tokenizer
    from vqct_tokenizer import VQCTTokenizer

    if not Path(vqct_tokenizer.__file__).resolve().is_relative_to(Path(args.src).resolve()):
        raise SystemExit(f"imported vqct_tokenizer from {vqct_tokenizer.__file__}, not from {args.src}")
    torch.set_num_threads(args.threads)
    tok = VQCTTokenizer.from_pretrained(args.model)
    if args.decode_precision:
        tok.decode_precision = args.decode_precision
    images = [np.asarray(np.load(p)) for p in args.images]
    out: dict = {"source": str(args.src), "threads": torch.get_num_threads()}
    if hasattr(tok, "resolved_decode_precision"):
        out["decode_precision"] = tok.resolved_decode_precision()
    if args.mode == "time":
        tok.decode(tok.encode(images[0], resize=False), output_type="np")  # untimed: first-call setup
        enc, dec = [], []
        for _ in range(args.repeats):
            for image in images:
                t0 = time.perf_counter()
                ids = tok.encode(image, resize=False)
                t1 = time.perf_counter()
                tok.decode(ids, output_type="np")
                dec.append(time.perf_counter() - t1)
                enc.append(t1 - t0)
        out.update(encode_s=enc, decode_s=dec)
    else:
        ids, recs = [], []
        for image in images:
            tokens, size = tok.encode(image, resize=False, return_image_sizes=True)
            ids.append(tokens.cpu().numpy())
            recs.append(tok.decode(tokens, image_size=size, output_type="np"))
        np.save(Path(args.out).with_suffix(".ids.npy"), np.stack(ids))
        np.save(Path(args.out).with_suffix(".rec.npy"), np.stack(recs))
    Path(args.out).write_text(json.dumps(out))


# ------------------------------------------------------------------------------------------- parent
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def prepare_images(data_root: Path, count: int, size: tuple[int, int], folder: Path) -> list[Path]:
    from PIL import Image

    lines = [line.strip() for line in (data_root / "open" / "test.txt").read_text().splitlines() if line.strip()]
    paths = []
    for i, rel in enumerate(lines[:count]):
        image = Image.open(data_root / "open" / rel).convert("RGB").resize(size, Image.BICUBIC)
        paths.append(folder / f"{i:04d}.npy")
        np.save(paths[-1], np.asarray(image))
    return paths


def run_child(impl: str, src: Path, mode: str, images: list[Path], out: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--src", str(src), "--mode", mode, "--out", str(out),
           "--model", str(args.model), "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--images", *map(str, images)]
    if impl == "after-fp32":
        cmd += ["--decode-precision", "fp32"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run(cmd, check=True, env=env, cwd=src)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "weights" / "vqct-open-f8")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA", ROOT.parent / "shared" / "data")))
    p.add_argument("--baseline-rev", default=BASELINE_REV)
    p.add_argument("--size", default="640x427", help="WxH of the photos (default 640x427)")
    p.add_argument("--timing-photos", type=int, default=3)
    p.add_argument("--photos", type=int, default=50, help="photos for token and pixel agreement")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per photo per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "throughput_cpu.json")
    # child-process arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("time", "agree"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--images", nargs="+", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--decode-precision", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    args.model = args.model.resolve()
    width, height = (int(v) for v in args.size.lower().split("x"))

    from tqdm.auto import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(baseline), args.baseline_rev],
                       check=True, cwd=ROOT)
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", args.baseline_rev], check=True, cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip()
            sources = {"before": baseline, "after-fp32": ROOT, "after": ROOT}
            photos = prepare_images(args.data_root, max(args.photos, args.timing_photos), (width, height), tmp)
            timing = {impl: {"encode_s": [], "decode_s": []} for impl in IMPLS}
            decode_precision = {}
            bar = tqdm(total=args.rounds * len(IMPLS) + len(IMPLS), desc="throughput_cpu", unit="proc")
            for r in range(args.rounds):
                order = IMPLS[r % len(IMPLS):] + IMPLS[:r % len(IMPLS)]
                for impl in order:
                    res = run_child(impl, sources[impl], "time", photos[:args.timing_photos], tmp / f"t_{impl}_{r}.json", args)
                    timing[impl]["encode_s"] += res["encode_s"]
                    timing[impl]["decode_s"] += res["decode_s"]
                    decode_precision[impl] = res.get("decode_precision", "fp32")
                    bar.update()
            agree = {}
            for impl in IMPLS:
                run_child(impl, sources[impl], "agree", photos[:args.photos], tmp / f"a_{impl}.json", args)
                agree[impl] = (np.load(tmp / f"a_{impl}.ids.npy"), np.load(tmp / f"a_{impl}.rec.npy"))
                bar.update()
            bar.close()
            originals = np.stack([np.load(q) for q in photos[:args.photos]])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = {}
    for impl in IMPLS:
        enc, dec = timing[impl]["encode_s"], timing[impl]["decode_s"]
        total = [a + b for a, b in zip(enc, dec)]
        ids, rec = agree[impl]
        results[impl] = {
            "decode_precision": decode_precision[impl],
            "encode_s": statistics.median(enc), "decode_s": statistics.median(dec), "total_s": statistics.median(total),
            "calls": len(total),
            "tokens_identical_to_before": float(np.mean(ids == agree["before"][0])),
            "psnr_vs_original": psnr(rec, originals),
            "psnr_vs_before": psnr(rec, agree["before"][1]),
            # the decoder precision alone: the same checkout's float32 decode of (nearly) the same tokens
            "psnr_vs_after_fp32": psnr(rec, agree["after-fp32"][1]),
            "max_level_diff_vs_after_fp32": int(np.abs(rec.astype(np.int16) - agree["after-fp32"][1]).max()),
            "share_equal_vs_after_fp32": float(np.mean(rec == agree["after-fp32"][1])),
        }
    for impl in IMPLS:
        results[impl]["speedup_vs_before"] = results["before"]["total_s"] / results[impl]["total_s"]
    report = {
        "what": f"tok.encode(resize=False) + tok.decode of {width}x{height} photos at batch 1 "
                f"(open test photos upscaled bicubic), {args.threads} threads",
        "baseline_rev": commit, "size": [width, height], "timing_photos": args.timing_photos,
        "agreement_photos": args.photos, "repeats": args.repeats, "rounds": args.rounds, "threads": args.threads,
        "cpu": platform.processor() or platform.machine(), "load_average_after": load,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['what']}; before = {commit}")
    print(f"{'impl':<11} {'decode':<6} {'encode s':>9} {'decode s':>9} {'total s':>8} {'speed-up':>9} "
          f"{'same tokens':>12} {'PSNR orig':>10} {'PSNR vs before':>15} {'PSNR vs after-fp32':>19}")
    for impl, r in results.items():
        print(f"{impl:<11} {r['decode_precision']:<6} {r['encode_s']:9.3f} {r['decode_s']:9.3f} {r['total_s']:8.3f} "
              f"{r['speedup_vs_before']:8.2f}x {100 * r['tokens_identical_to_before']:11.3f}% "
              f"{r['psnr_vs_original']:10.2f} {r['psnr_vs_before']:15.2f} {r['psnr_vs_after_fp32']:19.2f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
