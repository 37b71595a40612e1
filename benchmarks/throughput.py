"""Benchmark: encode and decode images/s and peak memory, ours vs diffusers' VQModel, side by side,
with our fast encoder paths and their token agreement with our float32 path.

    python benchmarks/throughput.py                              # the shipped default model
    python benchmarks/throughput.py --agreement-data ../shared/data/faces256/test.txt --agreement-images 1000
    python benchmarks/throughput.py --model weights/vqct-faces64 -o throughput.json
    python benchmarks/throughput.py --make-random /tmp/faces64-random   # save a random faces64-size model
    python benchmarks/throughput.py --model /tmp/faces64-random --repeats 3 --warmup 1

This script times and assembles the report; each other measurement lives in a module of its own:
``peak_memory.py`` (peak RSS), ``flops.py`` (GFLOPs per call, dense-conv peak), ``token_agreement.py``
(parity with diffusers, identical tokens of the fast paths) and ``bench_common.py`` (shared helpers).
``throughput_cpu.py`` measures the default path against the reference on a photo, end to end.

What is measured, for each batch size (default 1 and 32) and each implementation:

* **encode**: image tensor (B, 3, H, W) in [-1, 1] -> token ids (B, h, w, k+1);
* **decode**: token ids -> image tensor (B, 3, H, W).

"ours" is ``VQCTTokenizer.model`` (``encode_ids`` / ``decode_ids``), the float32 reference path.
"ours-fast" and "ours-bf16" (encode only; ``--fast-paths``) are ``tok.encode_preprocessed(x,
precision="fast" | "bf16")`` (see ``vqct_tokenizer.fast_encode``): "fast" is float32, channels-last,
network and quantizer compiled into one graph with ``torch.compile``; "bf16" runs the encoder trunk
in bfloat16 (eager). Both are whole encode paths, quantizer included (float32 distances). "diffusers" is an independent
implementation of the same encoder and decoder, ``diffusers.VQModel``, with our weights mapped in by
``vqct_tokenizer.interop.to_diffusers_vqmodel``. diffusers has no counterpart of VQCT's dual
quantizer, so on both sides the token lookup is ours (the same code, the same cost): diffusers'
encode is ``quantizer.encode(vq.encode(x).latents)``, its decode ``vq.decode(quantizer.lookup(ids),
force_not_quantize=True)``. The ratio ours/diffusers therefore compares the networks.

Method:

* Timing: for each (operation, batch, round) a fresh Python process loads both implementations, sets
  ``torch.set_num_threads(--threads)`` (default: every core this process may use), and under
  ``torch.inference_mode()`` makes ``--warmup`` untimed calls of each, then ``--repeats`` timed calls
  of each, interleaved (A B B A A B ...). Images/s is batch / median call time. On a loaded machine
  speed drifts by the second; interleaving gives both the same conditions, so the ratio holds when
  absolute numbers do not. ``--rounds`` repeats this in new processes and pools the calls.
* Peak memory: for each (implementation, operation, batch) a fresh process loads one implementation
  and its input, resets the peak-RSS counter, makes ``--memory-calls`` calls and reads the peak
  again. "Peak RSS delta" is that peak minus the RSS with model and input loaded: what running the
  network adds. It is the median of ``--memory-runs`` such processes (the JSON has the range): at
  batch 32 identical runs differ by tens of MiB with the state of the C allocator. On Linux the counter is ``VmHWM`` of /proc/self/status, reset by writing 5 to
  /proc/self/clear_refs. ``getrusage().ru_maxrss`` is not usable in a subprocess on Linux: a child
  started by fork+exec inherits its parent's peak, so every child would report this benchmark's own
  peak; it is only the fallback where /proc is missing. RSS counts everything the OS gave the
  process (oneDNN scratch, allocator slack), which tracemalloc and torch's CPU allocator do not see.
* GFLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` over a batch-1 call (a multiply-add
  is 2 FLOPs; convolutions, matmuls and attention; norms, activations and resampling are not
  counted). torch's table has no entry for CPU attention
  (``_scaled_dot_product_flash_attention_for_cpu``), so this script supplies its formula.
* Dense-conv reference: a 3x3 convolution 256 -> 256 channels on (8, 256, 64, 64), median of a few
  calls at the start and at the end of the run; the higher is "conv peak". "% of conv peak" is
  (images/s x GFLOPs/image) / conv peak.
* Fast paths: their first call for an input shape compiles ("fast") and is never timed: every
  timing process makes at least one untimed call of them, whatever ``--warmup``, and reports its
  duration ("first call"); a memory process makes one call before resetting the peak counter, so
  their "peak RSS delta" is that of later calls (ours and diffusers' include their first call), and
  what the first call kept (the copy, the compiled graph, compiler state) is reported apart as
  ``first_call_rss_growth_mib``. Their GFLOPs are ours (the same network).
* Token agreement: ``--agreement-images`` images (default 1000) of ``--agreement-data`` (a folder or
  a list file, as ``vqct encode-dataset`` takes; without it, seeded random images, which say little),
  resized as ``tok.encode`` does, go through our float32 path and each fast path in batches of
  ``--agreement-batch`` (the last batch is padded to full size so that no second shape compiles). The
  share of identical tokens (every slot of every cell), of identical cells and of images whose whole
  grid is identical are reported, per path.
* Goal (issue 14): a fast path at >= 1.5x diffusers' encode images/s with >= 99 % identical tokens;
  the summary says, per batch size, which path meets it, if any.
* Parity: before timing, the same random images go through both; the pre-quantization latents and
  the decoder outputs for the same quantized latent must agree (``allclose``, ``--atol``/``--rtol``),
  and the share of identical tokens from our quantizer on either latent is reported. A mismatch
  still prints the table but exits 1.

diffusers is an optional benchmark dependency (``pip install diffusers``); without it, or for an
architecture it cannot express, only ours runs and the report says why. On a shared machine absolute
numbers move with the load (the load average is recorded); the ratio, measured in the same run, is
what to compare.
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
from typing import Any

from bench_common import (FAST_IMPLS, build_callables, cpu_name, default_threads, diffusers_version, example_inputs,
                          fmt, load_average, make_random_model)
from flops import CONV_SHAPE, conv_peak, count_gflops
from peak_memory import child_memory
from token_agreement import agreement, parity

IMPLS = ("ours", "diffusers")
OPS = ("encode", "decode")
GOAL_RATIO, GOAL_AGREEMENT = 1.5, 0.99


# -------------------------------------------------------------------------- measurements (children)
def child_time(spec: dict[str, Any]) -> dict[str, Any]:
    """Timing, in a fresh process: every implementation loaded, calls interleaved A B A B ...

    On a loaded machine the speed drifts by the second; interleaving gives both implementations the
    same conditions, so their ratio stays meaningful when absolute numbers do not.
    """
    import torch

    torch.set_num_threads(spec["threads"])
    from vqct_tokenizer import VQCTTokenizer

    tok = VQCTTokenizer.from_pretrained(spec["model"])
    fns = {impl: build_callables(tok, impl)[spec["op"]] for impl in spec["impls"]}
    images, ids = example_inputs(tok, spec["batch"], seed=spec["seed"])
    arg = images if spec["op"] == "encode" else ids
    times: dict[str, list[float]] = {impl: [] for impl in spec["impls"]}
    first_call: dict[str, float] = {}
    with torch.inference_mode():
        for impl in spec["impls"]:
            # a fast path's first call compiles: never timed, whatever --warmup says
            for i in range(max(spec["warmup"], 1 if impl in FAST_IMPLS else 0)):
                start = time.perf_counter()
                fns[impl](arg)
                if i == 0:
                    first_call[impl] = time.perf_counter() - start
        for r in range(spec["repeats"]):
            order = spec["impls"] if r % 2 == 0 else list(reversed(spec["impls"]))
            for impl in order:
                start = time.perf_counter()
                out = fns[impl](arg)
                times[impl].append(time.perf_counter() - start)
                del out
    return {"times": times, "first_call_s": first_call, "threads": torch.get_num_threads()}


def run_child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--child-{kind}", json.dumps(spec)],
                         capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{kind} measurement {spec} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- report
def markdown(report: dict[str, Any]) -> str:
    """One line per (op, batch, implementation)."""
    have_diff = report["diffusers"]["used"]
    agree = (report.get("agreement") or {}).get("paths", {})
    head = ["op", "batch", "implementation", "img/s"]
    if have_diff:
        head += ["x diffusers", "x diffusers (paired)"]
    head += ["GFLOPs/img", "% of conv peak", "peak RSS Δ MiB", "identical tokens vs ours fp32"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|"]
    for row in report["rows"]:
        for impl in row["impls"]:
            r = row[impl]
            cells = [row["op"], str(row["batch"]), impl, fmt(r["images_per_s"])]
            if have_diff:
                cells += [fmt(row["vs_diffusers"][impl], ".2f"), fmt(row["vs_diffusers_paired"][impl], ".2f")]
            if impl == "ours" and row["op"] == "encode":
                same = "reference"
            elif impl in agree:
                same = fmt(agree[impl]["token_agreement"] * 100, ".2f") + " %"
            else:
                same = "-"
            cells += [fmt(row["gflops_per_image"], ".3f"), fmt(r["fraction_of_conv_peak"] * 100, ".1f") + " %",
                      fmt(r["peak_rss_delta_mib"]), same]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per batch size and fast path: encode >= GOAL_RATIO x diffusers and >= GOAL_AGREEMENT identical tokens?"""
    agree = (report.get("agreement") or {}).get("paths", {})
    out = []
    for row in report["rows"]:
        if row["op"] != "encode" or "diffusers" not in row["impls"]:
            continue
        for impl in row["impls"]:
            if impl not in FAST_IMPLS:
                continue
            ratio = row["vs_diffusers"][impl]
            share = agree.get(impl, {}).get("token_agreement")
            out.append({"batch": row["batch"], "impl": impl, "ratio_vs_diffusers": ratio,
                        "ratio_vs_diffusers_paired": row["vs_diffusers_paired"][impl], "token_agreement": share,
                        "met": bool(ratio >= GOAL_RATIO and share is not None and share >= GOAL_AGREEMENT)})
    return out


def summarize(times: list[float], memory: list[dict[str, Any]], batch: int, gflops: float,
              peak: float) -> dict[str, Any]:
    med = statistics.median(times)
    ips = batch / med
    return {
        "images_per_s": ips,
        "median_call_s": med,
        "best_call_s": min(times),
        "images_per_s_best_call": batch / min(times),
        "calls": len(times),
        "call_times_s": times,
        "achieved_gflops_per_s": ips * gflops,
        "fraction_of_conv_peak": ips * gflops / peak,
        # median over fresh processes: the same run varies by tens of MiB with the allocator's state
        "peak_rss_delta_mib": statistics.median(m["peak_rss_delta_mib"] for m in memory),
        "peak_rss_delta_mib_range": [min(m["peak_rss_delta_mib"] for m in memory),
                                     max(m["peak_rss_delta_mib"] for m in memory)],
        "peak_rss_mib": statistics.median(m["peak_rss_mib"] for m in memory),
        "loaded_rss_mib": statistics.median(m["loaded_rss_mib"] for m in memory),
        "memory_runs": memory,
        "memory_method": memory[0]["method"],
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("--child-time", "--child-memory"):
        fn = child_time if sys.argv[1] == "--child-time" else child_memory
        print(json.dumps(fn(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="tokenizer folder, shipped name or Hub id (default: the shipped default "
                                        "model; if its weights are not installed, a random model of its architecture)")
    parser.add_argument("--make-random", type=Path, metavar="DIR",
                        help="save a random tokenizer of the faces64 architecture to DIR and exit")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help=f"torch threads in every measurement (default: all usable cores, {default_threads()}). "
                             "On a machine busy with other jobs, fewer threads than cores can be far faster: "
                             "OpenMP threads wait on each other whenever one is descheduled")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before them (default 2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the timing, each round in a fresh process, alternating order (default 1)")
    parser.add_argument("--memory-calls", type=int, default=2,
                        help="calls in each fresh memory-measuring process (default 2)")
    parser.add_argument("--memory-runs", type=int, default=3,
                        help="fresh processes per memory figure; the median is reported (default 3)")
    parser.add_argument("--no-diffusers", action="store_true", help="measure ours only")
    parser.add_argument("--fast-paths", nargs="*", choices=sorted(FAST_IMPLS.values()), default=["fast", "bf16"],
                        help="our fast encoder paths to time next to ours (float32) and diffusers, and to check "
                             "for identical tokens (default: fast bf16; none: --fast-paths with no value)")
    parser.add_argument("--agreement-data", metavar="DIR_OR_LIST",
                        help="images for the token-agreement check: a folder or a list file of paths relative to "
                             "it, as for vqct encode-dataset (default: seeded random images)")
    parser.add_argument("--agreement-images", type=int, default=1000,
                        help="images in the token-agreement check, the first of --agreement-data (default 1000; "
                             "0 skips the check)")
    parser.add_argument("--agreement-batch", type=int, default=50,
                        help="encoder batch in the token-agreement check (default 50)")
    parser.add_argument("--parity-batch", type=int, default=4, help="images in the parity check (default 4)")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("-o", "--output", type=Path, help="write the full report as JSON")
    args = parser.parse_args()
    if args.make_random:
        make_random_model(args.make_random)
        print(f"saved a random faces64-architecture tokenizer to {args.make_random}")
        return
    if min(args.threads, args.repeats, args.rounds, args.memory_calls, args.memory_runs, min(args.batch_sizes)) < 1 or args.warmup < 0:
        parser.error("--threads, --repeats, --rounds, --memory-calls, --memory-runs and batch sizes must be >= 1, "
                     "--warmup >= 0")
    if args.agreement_images < 0 or args.agreement_batch < 1:
        parser.error("--agreement-images must be >= 0 and --agreement-batch >= 1")

    import torch

    from vqct_tokenizer import VQCTTokenizer
    from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="vqct-throughput-")
    if args.model:
        model, model_label = args.model, args.model
    elif find_shipped(DEFAULT_MODEL) is not None:
        model, model_label = DEFAULT_MODEL, DEFAULT_MODEL
    else:
        model = str(make_random_model(Path(tmp.name) / "faces64-random"))
        model_label = f"random weights, {DEFAULT_MODEL} architecture ({DEFAULT_MODEL} weights not installed)"
        print(f"note: {DEFAULT_MODEL} is not installed; using a random model of its architecture", flush=True)
    tok = VQCTTokenizer.from_pretrained(model)
    cfg = tok.config

    # -- can diffusers run?
    diff_note = None
    if args.no_diffusers:
        diff_note = "disabled with --no-diffusers"
    elif diffusers_version() is None:
        diff_note = "diffusers is not installed (pip install diffusers): ours only"
    else:
        from vqct_tokenizer.interop import check_diffusers_compatible

        try:
            check_diffusers_compatible(cfg)
        except ValueError as e:
            diff_note = f"architecture not expressible in diffusers ({e}): ours only"
    impls = IMPLS if diff_note is None else ("ours",)
    if diff_note:
        print(f"note: {diff_note}", flush=True)
    by_precision = {v: k for k, v in FAST_IMPLS.items()}
    fast_impls = [by_precision[p] for p in dict.fromkeys(args.fast_paths)]

    def impls_for(op: str) -> list[str]:
        """ours first, then our fast paths (encode only), then diffusers."""
        return ["ours"] + (fast_impls if op == "encode" else []) + [i for i in impls if i != "ours"]

    report: dict[str, Any] = {
        "model": model_label,
        "architecture": {k: v for k, v in cfg.to_dict().items() if k != "extra"},
        "threads": args.threads,
        "cpu": cpu_name(), "cores_usable": default_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "diffusers": {"version": diffusers_version(), "used": diff_note is None, "note": diff_note},
        "fast_paths": {impl: FAST_IMPLS[impl] for impl in fast_impls},
        "repeats": args.repeats, "warmup": args.warmup, "rounds": args.rounds,
        "memory_method": "fresh process per (implementation, op, batch): peak RSS over --memory-calls calls "
                         "(Linux: VmHWM, reset via /proc/self/clear_refs once model and inputs are loaded) minus "
                         "the RSS at that point",
        "timing_method": "fresh process per (op, batch, round) holding every implementation; --warmup calls "
                         "each (at least 1 for a fast path: its first call compiles), then --repeats calls each, "
                         "interleaved; images/s = batch / median call time",
        "flops_method": "torch.utils.flop_counter.FlopCounterMode, batch 1, multiply-add = 2 FLOPs, "
                        "CPU flash attention added",
        "load_average_start": load_average(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    # -- parity
    if diff_note is None:
        report["parity"] = p = parity(tok, args.parity_batch, args.atol, args.rtol)
        print(f"parity ({p['images']} images): encoder latent max |diff| {p['encoder_latent_max_abs_diff']:.3g} "
              f"(max |latent| {p['encoder_latent_max_abs']:.3g}), decoder output max |diff| "
              f"{p['decoder_output_max_abs_diff']:.3g}, token agreement {p['token_agreement']:.4f}: "
              f"{'PASS' if p['passed'] else 'FAIL'}", flush=True)

    # -- identical tokens: each fast path vs our float32 path
    if fast_impls and args.agreement_images > 0:
        report["agreement"] = a = agreement(tok, fast_impls, args.agreement_data, args.agreement_images,
                                            args.agreement_batch)
        print(f"token agreement with ours fp32 ({a['source']}, {a['tokens_per_image']} tokens/image):", flush=True)
        for impl, r in a["paths"].items():
            print(f"  {impl}: identical tokens {r['token_agreement'] * 100:.2f} %, "
                  f"cells {r['cell_agreement'] * 100:.2f} %, "
                  f"whole images {r['image_agreement'] * 100:.1f} %; per slot "
                  + ", ".join(f"{v * 100:.2f} %" for v in r["per_slot_agreement"])
                  + f"; first batch (builds/compiles) {r['first_batch_s']:.1f} s", flush=True)

    # -- FLOPs per image (batch 1)
    images1, ids1 = example_inputs(tok, 1)
    flops: dict[str, dict[str, float]] = {}
    for impl in impls:
        fns = build_callables(tok, impl)
        flops[impl] = {"encode": count_gflops(fns["encode"], images1), "decode": count_gflops(fns["decode"], ids1)}
    for impl in fast_impls:  # the same network; a compiled graph hides its ops from the counter
        flops[impl] = {"encode": flops["ours"]["encode"]}
    report["gflops_per_image"] = flops

    # -- dense-conv reference, then the measurements, then the reference again
    conv_start = conv_peak(args.threads, max(3, args.repeats // 2), 1)
    print(f"dense 3x3 conv reference: {conv_start['gflops_per_s']:.1f} GFLOP/s (start)", flush=True)
    times: dict[tuple[str, str, int], list[float]] = {}
    memory: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    first_calls: dict[tuple[str, str, int], list[float]] = {}
    for rnd in range(args.rounds):
        for batch in args.batch_sizes:
            for op in OPS:
                order = impls_for(op) if rnd % 2 == 0 else list(reversed(impls_for(op)))
                spec = {"model": model, "impls": order, "op": op, "batch": batch, "threads": args.threads,
                        "warmup": args.warmup, "repeats": args.repeats, "seed": 0}
                r = run_child("time", spec)
                line = []
                for impl in impls_for(op):
                    times.setdefault((impl, op, batch), []).extend(r["times"][impl])
                    line.append(f"{impl} {batch / statistics.median(r['times'][impl]):.1f}")
                    if impl in FAST_IMPLS:
                        first_calls.setdefault((impl, op, batch), []).append(r["first_call_s"][impl])
                        line[-1] += f" (first call {r['first_call_s'][impl]:.1f} s)"
                print(f"  round {rnd + 1}: {op} batch {batch}: img/s " + ", ".join(line), flush=True)
    cases = [(batch, op) for batch in args.batch_sizes for op in OPS]
    for run in range(args.memory_runs):
        for batch, op in cases:
            for impl in (impls_for(op) if run % 2 == 0 else list(reversed(impls_for(op)))):
                spec = {"model": model, "impl": impl, "op": op, "batch": batch, "threads": args.threads,
                        "calls": args.memory_calls, "seed": 0}
                m = run_child("memory", spec)
                memory.setdefault((impl, op, batch), []).append(m)
                print(f"  memory run {run + 1}: {op} batch {batch} {impl}: peak RSS {m['peak_rss_mib']:.1f} MiB, "
                      f"+{m['peak_rss_delta_mib']:.1f} MiB over the loaded process ({m['method']})", flush=True)
    conv_end = conv_peak(args.threads, max(3, args.repeats // 2), 1)
    print(f"dense 3x3 conv reference: {conv_end['gflops_per_s']:.1f} GFLOP/s (end)", flush=True)
    peak = max(conv_start["gflops_per_s"], conv_end["gflops_per_s"])
    report["conv_reference"] = {"shape": CONV_SHAPE, "kernel": 3, "start": conv_start, "end": conv_end,
                                "peak_gflops_per_s": peak}

    rows = []
    for batch in args.batch_sizes:
        for op in OPS:
            row: dict[str, Any] = {"op": op, "batch": batch, "gflops_per_image": flops["ours"][op],
                                   "impls": impls_for(op)}
            for impl in impls_for(op):
                row[impl] = summarize(times[(impl, op, batch)], memory[(impl, op, batch)], batch,
                                      flops[impl][op], peak)
                if impl in FAST_IMPLS:
                    row[impl]["first_call_s"] = first_calls[(impl, op, batch)]
                    growth = [m["first_call_rss_growth_mib"] for m in memory[(impl, op, batch)]
                              if m["first_call_rss_growth_mib"] is not None]
                    row[impl]["first_call_rss_growth_mib"] = statistics.median(growth) if growth else None
            if "diffusers" in row:
                row["ratio_ours_over_diffusers"] = row["ours"]["images_per_s"] / row["diffusers"]["images_per_s"]
                # calls were interleaved: call i of each ran under about the same load
                pairs = zip(times[("diffusers", op, batch)], times[("ours", op, batch)])
                row["ratio_paired_median"] = statistics.median(d / o for d, o in pairs)
                row["vs_diffusers"] = {impl: row[impl]["images_per_s"] / row["diffusers"]["images_per_s"]
                                       for impl in impls_for(op)}
                row["vs_diffusers_paired"] = {
                    impl: statistics.median(d / o for d, o in zip(times[("diffusers", op, batch)],
                                                                  times[(impl, op, batch)]))
                    for impl in impls_for(op)}
            rows.append(row)
    report["rows"] = rows
    report["load_average_end"] = load_average()

    table = markdown(report)
    report["markdown"] = table
    print()
    print(f"model: {model_label}; {cfg.resolution}x{cfg.resolution} -> {cfg.latent_size}x{cfg.latent_size}x"
          f"{cfg.tokens_per_cell} tokens; torch threads={args.threads} on {report['cpu']}; torch {torch.__version__}"
          + (f", diffusers {report['diffusers']['version']}" if diff_note is None else f"; {diff_note}"))
    print(f"conv peak {peak:.1f} GFLOP/s (3x3, 256->256, 8x256x64x64); load average "
          f"{report['load_average_start']} -> {report['load_average_end']}")
    print()
    print(table)
    for row in rows:
        for impl in row["impls"]:
            if impl in FAST_IMPLS:
                r = row[impl]
                print(f"{impl} {row['op']} b{row['batch']}: first call (builds the copy; compiles for 'fast') "
                      f"{statistics.median(r['first_call_s']):.1f} s, RSS kept by it "
                      f"{fmt(r['first_call_rss_growth_mib'])} MiB (not in its peak RSS delta)")
    if diff_note is None:
        print("\nours/diffusers from interleaved call pairs (median of per-pair ratios): " + ", ".join(
            f"{r['op']} b{r['batch']} {r['ratio_paired_median']:.2f}" for r in rows))
        if fast_impls:
            report["goal"] = g = goal(report)
            print(f"\ngoal (issue 14): a fast encode path at >= {GOAL_RATIO}x diffusers' img/s with >= "
                  f"{GOAL_AGREEMENT * 100:.0f} % tokens identical to ours fp32"
                  + ("" if "agreement" in report else " (no agreement check was run: cannot be met)"))
            for r in g:
                share = "n/a" if r["token_agreement"] is None else f"{r['token_agreement'] * 100:.2f} %"
                print(f"  encode b{r['batch']} {r['impl']}: {r['ratio_vs_diffusers']:.2f}x diffusers "
                      f"(paired {r['ratio_vs_diffusers_paired']:.2f}x), identical tokens {share}: "
                      f"{'MET' if r['met'] else 'not met'}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    tmp.cleanup()
    if diff_note is None and not report["parity"]["passed"]:
        raise SystemExit("parity FAILED: ours and diffusers disagree beyond tolerance (see above)")


if __name__ == "__main__":
    main()
