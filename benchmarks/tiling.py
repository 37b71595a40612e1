"""Tiled native encode and decode: what tiling does to tokens, to pixels at the seams, and to memory.

    python benchmarks/tiling.py                                   # every part, the default model
    python benchmarks/tiling.py --photos 20 --parts tokens seams  # a quicker look

Parts (each writes its section of ``benchmarks/results/tiling.json``, keeping the others):

* ``tokens``: the open test photos at native size (384x256) encoded whole and with tiles of
  ``--photo-tile`` pixels (small enough to force tiles), and a 1024x1024 image (the first photo's
  centre square, upscaled) whole and with the default tiles: the fraction of cells whose ids are
  all identical, and the seconds of each, measured side by side in one process.
* ``seams``: the whole-image tokens decoded whole and tiled (tiles of ``--photo-tile`` pixels with
  each of ``--overlaps``; the default tiles for the 1024x1024 image): PSNR against the original in
  a band of +-16 pixels around each seam (the middle of each overlap) and in the rest of the image,
  pooled over images (PSNR of the pooled mean squared error), and PSNR of tiled against whole.
* ``memory``: ``vqct reconstruct IMG --native`` at the default limits, each size in a fresh process
  (sizes measured by an earlier run under the same cap are kept unless measured again)
  under an address-space cap (``--cap-gib``, as ``ulimit -v`` sets it): exit code, its message,
  peak RSS and peak virtual size, seconds. The images are the first photo upscaled (bicubic) to
  each of ``--sizes``, written to a temporary folder. ``--tile-sizes`` adds the peaks of one
  ``--tile-image`` reconstruct per tile size, uncapped, to choose the default tile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vqct_tokenizer import VQCTTokenizer  # noqa: E402
from vqct_tokenizer.image_io import list_image_paths  # noqa: E402
from vqct_tokenizer.runtime import library_versions  # noqa: E402
from vqct_tokenizer.tiling import tile_layout  # noqa: E402

BAND = 16  # pixels each side of a seam

# A fresh process: cap its address space, run the CLI, report its peaks (Linux /proc) and exit code.
CHILD = """
import json, resource, sys, time
cap, tile, argv = json.loads(sys.argv[1])
if cap:
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import io, contextlib
from vqct_tokenizer.cli import main
if tile:
    from vqct_tokenizer.tokenizer import VQCTTokenizer
    VQCTTokenizer.tile_size = tile
err = io.StringIO()
start = time.perf_counter()
with contextlib.redirect_stderr(err):
    try:
        rc = main(argv)
    except MemoryError as e:
        rc = "MemoryError"
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"rc": rc, "message": err.getvalue().strip().splitlines()[-1:] or None, "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_virtual_mib": int(status["VmPeak"].split()[0]) / 1024}))
"""


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0


def big_square(photo: Path, side: int = 1024) -> Image.Image:
    image = Image.open(photo).convert("RGB")
    s = min(image.size)
    left, top = (image.width - s) // 2, (image.height - s) // 2
    return image.crop((left, top, left + s, top + s)).resize((side, side), Image.BICUBIC)


def seam_mask(height: int, width: int, tok: VQCTTokenizer) -> torch.Tensor:
    """True within BAND pixels of the middle of each overlap of the tiles ``decode`` uses."""
    f = tok.downsample_factor
    tile, overlap = tok.tile_size // f, -(-tok.tile_overlap // f)
    mask = torch.zeros(height, width, dtype=torch.bool)
    if max(-(-height // f), -(-width // f)) * f <= tok.tile_size:
        return mask  # one tile: decoded whole
    for axis, length in ((0, height), (1, width)):
        cells = -(-length // f)
        starts, size = tile_layout(cells, tile, overlap)
        for a, b in zip(starts, starts[1:]):
            centre = round((b + a + size) / 2 * f)
            lo, hi = max(0, centre - BAND), min(length, centre + BAND)
            if axis == 0:
                mask[lo:hi] = True
            else:
                mask[:, lo:hi] = True
    return mask


class Pool:
    """Pooled squared errors of a region over images; PSNR of the pooled mean."""

    def __init__(self) -> None:
        self.sq, self.n = 0.0, 0

    def add(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> None:
        err = (a - b).square().mean(0)[mask]
        self.sq += float(err.sum())
        self.n += int(err.numel())

    def psnr(self) -> float | None:
        return None if self.n == 0 else round(10 * np.log10(1.0 / max(self.sq / self.n, 1e-12)), 3)


def part_tokens(tok: VQCTTokenizer, photos: list[Path], photo_tile: int) -> dict:
    default_tile = VQCTTokenizer.tile_size
    same = total = 0
    seconds = {"whole": 0.0, "tiled": 0.0}
    for path in photos:
        tok.tile_size = None
        start = time.perf_counter()
        whole = tok.encode(path, resize=False)
        seconds["whole"] += time.perf_counter() - start
        tok.tile_size = photo_tile
        start = time.perf_counter()
        tiled = tok.encode(path, resize=False)
        seconds["tiled"] += time.perf_counter() - start
        same += int((whole == tiled).all(-1).sum())
        total += whole.shape[0] * whole.shape[1]
    big = big_square(photos[0])
    tok.tile_size = None
    start = time.perf_counter()
    whole = tok.encode(big, resize=False)
    big_whole = time.perf_counter() - start
    tok.tile_size = default_tile
    start = time.perf_counter()
    tiled = tok.encode(big, resize=False)
    big_tiled = time.perf_counter() - start
    return {
        "photos": {"count": len(photos), "tile_size": photo_tile, "cells": total,
                   "identical_fraction": same / total,
                   "seconds_whole": round(seconds["whole"], 2), "seconds_tiled": round(seconds["tiled"], 2)},
        "1024x1024": {"tile_size": default_tile, "cells": int(whole.shape[0] * whole.shape[1]),
                      "identical_fraction": float((whole == tiled).all(-1).float().mean()),
                      "seconds_whole": round(big_whole, 2), "seconds_tiled": round(big_tiled, 2)},
    }


def seams_of(tok: VQCTTokenizer, images: list, tile: int, overlap: int) -> dict:
    pools = {k: Pool() for k in ("whole_band", "whole_rest", "tiled_band", "tiled_rest", "agree_band", "agree_rest")}
    seconds = {"whole": 0.0, "tiled": 0.0}
    for image in images:
        tok.tile_size = None
        tokens, size = tok.encode(image, resize=False, return_image_sizes=True)
        original = to_tensor(Image.open(image) if isinstance(image, Path) else image)
        start = time.perf_counter()
        whole = tok.decode(tokens, image_size=size, output_type="pt")
        seconds["whole"] += time.perf_counter() - start
        tok.tile_size, tok.tile_overlap = tile, overlap
        start = time.perf_counter()
        tiled = tok.decode(tokens, image_size=size, output_type="pt")
        seconds["tiled"] += time.perf_counter() - start
        band = seam_mask(size[0], size[1], tok)
        for mask, region in ((band, "band"), (~band, "rest")):
            pools[f"whole_{region}"].add(whole, original, mask)
            pools[f"tiled_{region}"].add(tiled, original, mask)
            pools[f"agree_{region}"].add(tiled, whole, mask)
    out = {"tile_size": tile, "tile_overlap": overlap, "band_pixels": pools["whole_band"].n,
           "rest_pixels": pools["whole_rest"].n}
    out.update({f"psnr_{k}": p.psnr() for k, p in pools.items()})
    out.update({f"seconds_{k}": round(v, 2) for k, v in seconds.items()})
    return out


def part_seams(tok: VQCTTokenizer, photos: list[Path], photo_tile: int, overlaps: list[int]) -> dict:
    result = {"photos": [seams_of(tok, photos, photo_tile, o) for o in overlaps]}
    result["1024x1024"] = [seams_of(tok, [big_square(photos[0])], VQCTTokenizer.tile_size, o) for o in overlaps]
    tok.tile_size, tok.tile_overlap = VQCTTokenizer.tile_size, VQCTTokenizer.tile_overlap
    return result


def run_child(cap_bytes: int | None, tile: int | None, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([cap_bytes, tile, argv])], capture_output=True,
                          text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
                                                    "PATH": "/usr/bin:/bin"})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"rc": proc.returncode, "crash": proc.stderr.strip().splitlines()[-3:]}
    return json.loads(lines[-1])


def part_memory(photo: Path, sizes: list[str], cap_gib: float, tile_sizes: list[int], tile_image: str,
                model: str) -> dict:
    result: dict = {"cap_gib": cap_gib, "command": "vqct reconstruct IMG --native -o OUT.png", "sizes": {},
                    "tile_sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        def make(size: str) -> Path:
            w, h = (int(v) for v in size.split("x"))
            path = Path(tmp) / f"{size}.jpg"
            if not path.exists():
                Image.open(photo).convert("RGB").resize((w, h), Image.BICUBIC).save(path, quality=92)
            return path

        for size in sizes:
            argv = ["reconstruct", str(make(size)), "--native", "-o", str(Path(tmp) / "out.png"), "--model", model]
            result["sizes"][size] = run_child(int(cap_gib * 2 ** 30), None, argv)
            print(size, result["sizes"][size], flush=True)
        for tile in tile_sizes:
            argv = ["reconstruct", str(make(tile_image)), "--native", "-o", str(Path(tmp) / "out.png"), "--model", model]
            result["tile_sizes"][str(tile)] = run_child(None, tile, argv) | {"image": tile_image}
            print("tile", tile, result["tile_sizes"][str(tile)], flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vqct-open-f8")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/open/test.txt")
    p.add_argument("--photos", type=int, default=200, help="how many of the listed photos (in list order)")
    p.add_argument("--photo-tile", type=int, default=128, help="tile size in pixels for the photos (forces tiles)")
    p.add_argument("--overlaps", type=int, nargs="+", default=[32, 64])
    p.add_argument("--sizes", nargs="+", default=["3000x2000", "6000x4000"])
    p.add_argument("--cap-gib", type=float, default=3.0)
    p.add_argument("--tile-sizes", type=int, nargs="*", default=[])
    p.add_argument("--tile-image", default="2048x1366")
    p.add_argument("--parts", nargs="+", default=["tokens", "seams", "memory"], choices=["tokens", "seams", "memory"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks/results/tiling.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = list_image_paths(args.data)[:args.photos]
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    tok = VQCTTokenizer.from_pretrained(args.model)
    results.update({"model": args.model, "versions": library_versions(["torch", "vqct-tokenizer"]),
                    "threads": torch.get_num_threads(),
                    "defaults": {"tile_size": VQCTTokenizer.tile_size, "tile_overlap": VQCTTokenizer.tile_overlap,
                                 "max_native_pixels": VQCTTokenizer.max_native_pixels,
                                 "decode_precision": tok.resolved_decode_precision()}})
    for part in args.parts:
        start = time.perf_counter()
        if part == "tokens":
            results["tokens"] = part_tokens(tok, photos, args.photo_tile)
        elif part == "seams":
            results["seams"] = part_seams(tok, photos, args.photo_tile, args.overlaps)
        else:
            fresh = part_memory(photos[0], args.sizes, args.cap_gib, args.tile_sizes, args.tile_image, args.model)
            old = results.get("memory", {})
            if old.get("cap_gib") == fresh["cap_gib"]:  # sizes and tile sizes measured before stay, unless re-measured
                fresh["sizes"] = {**old.get("sizes", {}), **fresh["sizes"]}
                fresh["tile_sizes"] = {**old.get("tile_sizes", {}), **fresh["tile_sizes"]}
            results["memory"] = fresh
        print(part, json.dumps(results[part], indent=1), f"({time.perf_counter() - start:.0f} s)", flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
