"""``vqct export CHECKPOINT -o OUT``: a training checkpoint as a slim tokenizer folder."""

from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a ckpt_XXXXXXXX.pt file, or a run folder (its latest checkpoint)")
    p.add_argument("-o", "--output", required=True, help="folder to write the slim tokenizer to (a new or empty one)")
    p.add_argument("--resolution", type=int, default=None,
                   help="working resolution of the exported model (what encode resizes to); only for models "
                        "without attention resolutions, e.g. a fully convolutional model trained on crops")
    p.add_argument("--force", action="store_true",
                   help="write even into a non-empty folder, or into the package's or weights/ shipped models")


def run(args: argparse.Namespace) -> int:
    from ..training.export import export
    from .outputs import check_output_folder

    check_output_folder(args.output, args.force, "tokenizer")
    out = export(args.checkpoint, args.output, args.resolution)
    print(f"exported {args.checkpoint} -> {out}")
    return 0
