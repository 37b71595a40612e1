"""Refining photos one at a time against several per pass: ``encode(photos, refine_steps=N,
batch_size=B)`` for B = 1 and larger B, side by side in one process, on open test photos at 256x256.

    python benchmarks/refine_batch_speed.py --data-root ../shared/data --photos 6 --steps 10 --batch-sizes 1 6

Each batch size encodes the same photos; the sizes alternate over ``--repeats`` rounds (the order
rotates), so a slow moment of a shared CPU does not land on one of them. Prints and writes the median
seconds per photo, the ratio to the first batch size, and whether the tokens are identical to the
first batch size's (batching may change a float's last bits, so a near-tied cell may differ).
Writes benchmarks/results/refine_batch_speed.json. Run it on an idle machine: the times are wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from vqct_tokenizer import VQCTTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine_speed import centre_crop  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vqct-open-f8")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("VQCT_DATA_ROOT", "../shared/data")))
    p.add_argument("--photos", type=int, default=6, help="the first N open test photos")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 6])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "refine_batch_speed.json")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    tok = VQCTTokenizer.from_pretrained(args.model)
    listing = args.data_root / "open" / "test.txt"
    photos = [centre_crop(args.data_root / "open" / line, args.size)
              for line in listing.read_text().split()[:args.photos]]
    tok.encode(photos[:2], resize=False, refine_steps=2, batch_size=2)  # warm-up, not timed
    per_photo: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    tokens: dict[int, torch.Tensor] = {}
    for r in range(args.repeats):
        order = args.batch_sizes[r % len(args.batch_sizes):] + args.batch_sizes[:r % len(args.batch_sizes)]
        for b in order:
            start = time.perf_counter()
            tokens[b] = tok.encode(photos, resize=False, refine_steps=args.steps, batch_size=b)
            per_photo[b].append((time.perf_counter() - start) / len(photos))
            print(f"round {r}: batch {b}: {per_photo[b][-1]:.2f} s per photo", flush=True)
    first = args.batch_sizes[0]
    base = statistics.median(per_photo[first])
    rows = {b: {"median_s_per_photo": statistics.median(per_photo[b]),
                "ratio_to_first": statistics.median(per_photo[b]) / base,
                "tokens_identical_to_first": float((tokens[b] == tokens[first]).float().mean())}
            for b in args.batch_sizes}
    for b, row in rows.items():
        print(f"batch {b}: {row['median_s_per_photo']:.2f} s per photo, {row['ratio_to_first']:.2f}x batch {first}'s, "
              f"{100 * row['tokens_identical_to_first']:.2f} % of ids as batch {first}'s")
    report = {"model": args.model, "photos": args.photos, "size": args.size, "steps": args.steps,
              "threads": args.threads, "repeats": args.repeats, "rows": rows,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "command": "python benchmarks/refine_batch_speed.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
