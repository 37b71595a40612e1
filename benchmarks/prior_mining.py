"""Benchmark: captions/s of the POS miner against a plain single-process pass, side by side.

    python benchmarks/prior_mining.py                       # cub + flowers + coco_val2017 from ../shared
    python benchmarks/prior_mining.py --limit 20000 -o bench.json
    python benchmarks/prior_mining.py my_captions.txt.gz --workers 4

Three modes, each in a fresh Python process so all pay the same start-up costs (importing NLTK,
loading the tagger and WordNet) exactly as ``vqct build-codebook`` does; the time is the whole
``mine_captions`` call:

* ``plain``: one process tags every caption, as the paper's code does (the reference);
* ``single``: one process, repeated captions tagged once (``deduplicate_captions``);
* ``parallel``: what ``vqct build-codebook`` runs: deduplicated, on ``--workers`` processes.

The headline speedup is parallel against plain. parallel against single isolates what the
processes alone add. All modes must give identical words, counts and edges; the script checks.

Timings on a shared machine are noisy. ``--repeats`` alternates the modes and keeps each one's
fastest run; the load average is recorded; and each run also reports the CPU seconds it used
(its own and its workers'). CPU seconds do not depend on other people's jobs, so
``cpu_seconds / seconds`` shows how many cores a run actually got.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The shared data folder sits beside the repository (see ../shared/README.md).
DEFAULT_CORPORA = [
    REPO.parent / "shared" / "data" / "captions" / name
    for name in ("cub.txt.gz", "flowers.txt.gz", "coco_val2017.txt.gz")
]
TARGET_SPEEDUP = 1.8


def load_captions(paths: list[str], limit: int | None) -> list[str]:
    from vqct_tokenizer.codebook.captions import read_captions

    captions = [c for path in paths for c in read_captions(path)]
    if limit and limit < len(captions):
        # an even stride keeps every corpus represented (the first N would all be CUB)
        step = len(captions) / limit
        captions = [captions[int(i * step)] for i in range(limit)]
    return captions


MODES = ("plain", "single", "parallel")


def run_one(paths: list[str], limit: int | None, mode: str, workers: int, min_count: int) -> dict:
    """Time one mining pass in this (fresh) process and return its figures."""
    captions = load_captions(paths, limit)
    from vqct_tokenizer.codebook.mining import MiningOptions, mine_captions

    workers = workers if mode == "parallel" else 1
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    result = mine_captions(captions, MiningOptions(min_count=min_count), workers=workers, progress=False,
                           deduplicate_captions=mode != "plain")
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    return {
        "mode": mode,
        "workers": result.workers,
        "captions": result.num_captions,
        "tagged": result.tagged_captions,
        "seconds": round(seconds, 2),
        "captions_per_s": round(result.num_captions / seconds, 1),
        "cpu_seconds": round(cpu, 2),
        "cores_used": round(cpu / seconds, 2),
        "adjectives": len(result.adjectives),
        "nouns": len(result.nouns),
        "edges": len(result.edges),
        # a fingerprint of the full result, to check both modes agree exactly
        "result_hash": _fingerprint(result),
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _fingerprint(result) -> str:
    import hashlib

    payload = json.dumps(
        [result.adjectives, result.adjective_counts, result.nouns, result.noun_counts, result.edges]
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_in_subprocess(paths: list[str], limit: int | None, mode: str, workers: int, min_count: int) -> dict:
    command = [sys.executable, __file__, *paths, "--workers", str(workers), "--min-count", str(min_count),
               "--_child", mode]
    if limit:
        command += ["--limit", str(limit)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed ({mode}, workers={workers}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _python_work(_: int = 0) -> float:
    """A fixed amount of pure-Python work (dict lookups and string hashing, like the tagger's); its seconds."""
    start = time.perf_counter()
    table = {f"feature {i}": i for i in range(50_000)}
    total = 0
    for round_ in range(150):
        for i in range(50_000):
            total += table.get(f"feature {(i * 7 + round_) % 60_000}", 0)
    return time.perf_counter() - start


def machine_scaling(workers: int) -> dict:
    """How much faster ``workers`` processes get through ``workers`` units of pure-Python work than one
    process gets through one unit, scaled: the ceiling any process-parallel Python code can reach here."""
    from multiprocessing import get_context

    one = min(_python_work() for _ in range(2))
    with get_context("fork").Pool(workers) as pool:
        pool.map(_python_work, range(workers))  # warm the workers up
        start = time.perf_counter()
        pool.map(_python_work, range(workers))
        many = time.perf_counter() - start
    return {"one_process_s": round(one, 3), "workers": workers, "all_workers_s": round(many, 3),
            "scaling": round(workers * one / many, 3)}


def print_table(runs: list[dict], speedup: float, process_speedup: float) -> None:
    print(
        f"{'mode':<10} {'workers':>7} {'captions':>9} {'tagged':>9} {'seconds':>8} {'captions/s':>11} "
        f"{'cpu s':>8} {'cores':>6} {'A':>5} {'N':>5} {'edges':>7}"
    )
    for run in runs:
        print(
            f"{run['mode']:<10} {run['workers']:>7} {run['captions']:>9,} {run['tagged']:>9,} {run['seconds']:>8.1f} "
            f"{run['captions_per_s']:>11,.1f} {run['cpu_seconds']:>8.1f} {run['cores_used']:>6.2f} "
            f"{run['adjectives']:>5} {run['nouns']:>5} {run['edges']:>7,}"
        )
    for run in runs:
        if "seconds_all" in run:
            print(f"  {run['mode']}: seconds of each run {run['seconds_all']} (the table shows the median run)")
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
    print(f"speedup, parallel vs plain single-process pass: {speedup:.2f}x ({verdict} the {TARGET_SPEEDUP}x target)")
    print(f"speedup from the worker processes alone (parallel vs single, both deduplicated): {process_speedup:.2f}x")


def main(argv: list[str] | None = None) -> int:
    from vqct_tokenizer.codebook.mining import default_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "captions", nargs="*", help="caption sources (default: cub, flowers, coco_val2017 in ../shared)"
    )
    parser.add_argument("--limit", type=int, help="use this many captions, evenly spread over the corpora")
    parser.add_argument("--workers", type=int, default=default_workers(), help="parallel workers (default: all cores)")
    parser.add_argument("--min-count", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate the modes this many times; report each mode's median run (default 3)")
    parser.add_argument("-o", "--output", help="write the figures as JSON here")
    parser.add_argument("--calibrate", action="store_true",
                        help="also measure how well pure-Python work scales over the workers on this machine")
    parser.add_argument("--_child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    paths = args.captions or [str(p) for p in DEFAULT_CORPORA]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        parser.error(f"caption source not found: {', '.join(missing)}")
    if args._child:
        print(json.dumps(run_one(paths, args.limit, args._child, args.workers, args.min_count)))
        return 0

    load_before = os.getloadavg()
    all_runs = []
    for _ in range(max(1, args.repeats)):
        for mode in MODES:
            all_runs.append(run_in_subprocess(paths, args.limit, mode, args.workers, args.min_count))
    scaling = machine_scaling(args.workers) if args.calibrate else None
    load_after = os.getloadavg()
    # the median run of each mode: one noisy run on a shared VM must not carry the headline
    median = {}
    for mode in MODES:
        runs = sorted((r for r in all_runs if r["mode"] == mode), key=lambda r: r["seconds"])
        median[mode] = dict(runs[(len(runs) - 1) // 2], seconds_all=[round(r["seconds"], 2) for r in runs])
    plain, single, parallel = (median[mode] for mode in MODES)
    speedup = plain["seconds"] / parallel["seconds"]
    process_speedup = single["seconds"] / parallel["seconds"]
    print_table([plain, single, parallel], speedup, process_speedup)

    # What the speedup would be with every worker on an idle core of its own: the parallel run's
    # CPU time spread evenly over its workers, against the plain run's CPU time. An estimate,
    # labelled as such, for machines where other jobs make the wall-clock ratio meaningless.
    idle_estimate = plain["cpu_seconds"] / (parallel["cpu_seconds"] / parallel["workers"])
    print(f"idle-machine estimate from CPU seconds (parallel vs plain): {idle_estimate:.2f}x")
    if scaling:
        print(f"machine ceiling: {scaling['workers']} processes do pure-Python work {scaling['scaling']:.2f}x "
              f"as fast as one ({scaling['one_process_s']:.2f} s per unit alone, {scaling['all_workers_s']:.2f} s "
              f"for {scaling['workers']} units in parallel)")

    identical = len({r["result_hash"] for r in all_runs}) == 1
    if not identical:
        print("WARNING: the modes' results differ", file=sys.stderr)
    report = {
        "corpora": [Path(p).name for p in paths],
        "limit": args.limit,
        "min_count": args.min_count,
        "runs": [plain, single, parallel],  # the median run of each mode, with every run's seconds
        "all_runs": all_runs,
        "repeats": args.repeats,
        "speedup": round(speedup, 3),  # parallel (deduplicated) vs plain single-process pass
        "process_speedup": round(process_speedup, 3),  # parallel vs single, both deduplicated
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": speedup >= TARGET_SPEEDUP,
        "idle_speedup_estimate_from_cpu_seconds": round(idle_estimate, 3),
        "identical_results": identical,
        "machine_scaling": scaling,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
