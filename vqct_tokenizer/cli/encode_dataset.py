"""``vqct encode-dataset``: tokenize a folder or list of images into resumable shards.

One machine:   vqct encode-dataset images/ -o tokens/
Several GPUs:  torchrun --standalone --nproc_per_node=8 -m vqct_tokenizer encode-dataset images/ -o tokens/
Interrupted:   run the same command again; finished shards are kept, the rest is encoded.
Best tokens:   vqct encode-dataset images/ -o tokens/ --refine 20   (slow: fits each image's tokens to the decoder)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    from PIL import Image

    from ..defaults import DEFAULT_MODEL
    from ..tokenizer import DEFAULT_MAX_NATIVE_PIXELS
    from .tokens import non_negative_int

    parser.add_argument("source", metavar="DIR_OR_LIST",
                        help="a folder of images (searched recursively) or a text file of image paths, "
                             "one per line, relative to the file's folder")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT",
                        help="output folder: shard files, settings.json and, at the end, manifest.json")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"tokenizer folder, shipped model name or Hub repo id (default: {DEFAULT_MODEL})")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default: 32)")
    parser.add_argument("--precision", choices=("fp32", "fast", "bf16"), default="fp32",
                        help="encoder path (default: fp32, the reference: tokens of the training model). fast: "
                             "float32, channels-last, torch.compile (each new batch shape compiles first, tens of "
                             "seconds on a CPU); 99.97%% of tokens identical to fp32 with vqct-faces64. bf16: "
                             "bfloat16 encoder trunk, fastest; 95%% identical with vqct-faces64, 99.7%% with "
                             "vqgan-faces64. Nearest-code distances are float32 in all three. Recorded in "
                             "settings.json: resuming with another precision is refused")
    parser.add_argument("--shard-size", type=int, default=1024,
                        help="images per shard file (default: 1024); recorded in settings.json: resuming with "
                             "another shard size is refused")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--resolution", type=int, default=None,
                      help="resize to this size (as the model's config.json resize_mode says: a centre crop for "
                           "the shipped models) instead of its config.json resolution")
    size.add_argument("--native", action="store_true",
                      help="keep each image's own size (padded to a multiple of the downsampling factor)")
    parser.add_argument("--device", default="auto",
                        help="torch device, e.g. cpu or cuda:0 (default: auto = cuda if available, "
                             "cuda:LOCAL_RANK under torchrun, else cpu)")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding worker processes (default: 2)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help=f"largest image to read, in pixels (default: PIL's limit, {Image.MAX_IMAGE_PIXELS:,}), "
                             f"and with --native the largest to encode after padding (default: "
                             f"{DEFAULT_MAX_NATIVE_PIXELS:,}); larger images are listed as failures")
    parser.add_argument("--refine", type=non_negative_int, default=0, metavar="N",
                        help="fit each image's tokens to the decoder (as vqct encode --refine): N token grids "
                             "searched per image, the best kept. About 0.7 s per step for a 256x256 image on two "
                             "CPU cores; images that decode in tiles (over 640 px a side at --native) are listed as "
                             "failures. Recorded in settings.json: resuming with another value is refused "
                             "(default: 0, the encoder's tokens)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..tokens.dataset_reader import TokenDataset
    from ..tokens.dataset_writer import encode_dataset
    from ..tokens.shards import MANIFEST_NAME
    from .tokens import load_tokenizer

    # load on the CPU (with load_tokenizer's one-line error for a missing default model); the run
    # moves it to --device, which "auto" resolves per rank (cuda:LOCAL_RANK under torchrun)
    tok = load_tokenizer(args.model, "cpu")
    tok.precision = args.precision
    result = encode_dataset(args.source, args.output, tok, batch_size=args.batch_size, shard_size=args.shard_size,
                            resolution=args.resolution, native=args.native, device=args.device,
                            workers=args.workers, progress=args.progress, max_pixels=args.max_pixels,
                            refine_steps=args.refine, _cli=True)
    if (result.out_dir / MANIFEST_NAME).is_file() and _is_main():
        ds = TokenDataset(result.out_dir)
        counts = ds.manifest["counts"]
        print(f"wrote {result.out_dir}: {counts['encoded']} image(s) encoded, {counts['failed']} failed "
              f"(listed in manifest.json), {counts['shards']} shard(s); this process kept "
              f"{result.shards_skipped} finished shard(s) from an earlier run")
        for failure in ds.failures[:10]:
            print(f"  skipped {failure['path']}: {failure['error']}")
        if len(ds.failures) > 10:
            print(f"  ... and {len(ds.failures) - 10} more")
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
