"""Peak memory of ``encode-dataset`` for a small and a large dataset: it must stay flat.

Each size runs in a fresh Python process, which reports its own peak RSS (``ru_maxrss`` of itself)
and that of its DataLoader workers (``ru_maxrss`` of its children). A streaming encoder keeps both
the same for 100 and 2,000 images; one that held every image or every token grid would grow.

    python benchmarks/encode_memory.py                         # synthetic 64x64 images, default sizes
    python benchmarks/encode_memory.py --data ../shared/data/faces256 -o encode_memory.json

Without ``--model`` it uses the shipped default model when its weights are installed, else a small
random model (resolution 64, same speed class, meaningless tokens: memory does not care).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# What each fresh process runs: encode, then report its own peak RSS, its workers' peak, and its
# RSS at the end (Linux /proc): the peak carries some noise from transient buffers, the end value
# shows whether anything was retained.
CHILD = """
import json, os, resource, sys, time, torch
from vqct_tokenizer.dataset import encode_dataset
args = json.loads(sys.argv[1])
torch.set_num_threads(args.pop("threads"))
start = time.perf_counter()
result = encode_dataset(**args, progress=False)
seconds = time.perf_counter() - start
try:
    rss_end = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
except OSError:
    rss_end = None
print(json.dumps({
    "seconds": seconds, "encoded": result.encoded, "failed": result.failed,
    "peak_rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_rss_workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "rss_end_main_mib": rss_end,
}))
"""


def synthetic_images(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random JPEGs (noise over a colour ramp), as cheap to write as they are to read."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size)[None, :, None]
    paths = []
    for i in range(count):
        pixels = ((rng.integers(0, 256, size=(size, size, 3)) + ramp) / 2).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def small_random_model(folder: Path) -> Path:
    import torch

    from vqct_tokenizer import VQCTConfig, VQCTTokenizer

    torch.manual_seed(0)
    config = VQCTConfig(resolution=64, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,),
                        z_channels=16, codebook_dim=16, norm_groups=8, num_adjectives=64, num_nouns=128)
    tok = VQCTTokenizer(config)
    with torch.no_grad():
        tok.codebook.normal_()
    tok.save_pretrained(folder)
    return folder


def pick_model(requested: str | None, tmp: Path) -> str:
    from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped

    if requested:
        return requested
    if find_shipped(DEFAULT_MODEL) is not None:
        return DEFAULT_MODEL
    return str(small_random_model(tmp / "random-model"))


def run_one(list_file: Path, out: Path, model: str, args: argparse.Namespace) -> dict:
    params = {"source": str(list_file), "out_dir": str(out), "tokenizer": model, "batch_size": args.batch_size,
              "shard_size": args.shard_size, "workers": args.workers, "device": args.device, "threads": args.threads}
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(params)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"encode-dataset failed for {list_file}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="image folder or list file (default: synthetic images)")
    parser.add_argument("--model", help="tokenizer folder or name (default: the shipped model, else a small random one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000], help="dataset sizes (default: 100 2000)")
    parser.add_argument("--image-size", type=int, default=96, help="side of the synthetic images (default: 96)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the encoding process")
    parser.add_argument("--device", default="auto")
    parser.add_argument("-o", "--output", type=Path, help="write the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="encode-memory-") as tmp_name:
        tmp = Path(tmp_name)
        model = pick_model(args.model, tmp)
        if args.data is None:
            images = synthetic_images(tmp / "images", max(args.sizes), args.image_size)
            source = f"synthetic {args.image_size}x{args.image_size} JPEG"
        else:
            from vqct_tokenizer.dataset import list_inputs

            root, files = list_inputs(args.data)
            images = [(root / f).resolve() for f in files]
            source = str(args.data)
            if len(images) < max(args.sizes):
                raise SystemExit(f"{args.data} has {len(images)} images, fewer than {max(args.sizes)}")
        rows = []
        for n in args.sizes:
            list_file = tmp / f"first-{n}.txt"
            list_file.write_text("".join(f"{p}\n" for p in images[:n]))
            result = run_one(list_file, tmp / f"out-{n}", model, args)
            rows.append({"images": n, **result})
            end = result["rss_end_main_mib"]
            print(f"N={n:>6}: peak RSS main {result['peak_rss_main_mib']:7.1f} MiB, workers "
                  f"{result['peak_rss_workers_mib']:7.1f} MiB; RSS at the end "
                  f"{'n/a' if end is None else f'{end:.1f}'} MiB; {result['seconds']:6.1f} s "
                  f"({n / result['seconds']:.0f} img/s), {result['failed']} failed", flush=True)

    first, last = rows[0], rows[-1]
    ratio = last["peak_rss_main_mib"] / first["peak_rss_main_mib"]
    print(f"main-process peak RSS ratio N={last['images']} / N={first['images']}: {ratio:.3f} "
          f"({'flat' if ratio < 1.1 else 'GROWS'})")
    report = {"source": source, "model": model if not model.startswith(tempfile.gettempdir()) else "small random model",
              "batch_size": args.batch_size, "shard_size": args.shard_size, "workers": args.workers,
              "threads": args.threads, "rows": rows, "main_rss_ratio": ratio}
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
