"""``vqct export CHECKPOINT -o weights/NAME``."""

from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a ckpt_XXXXXXXX.pt file, or a run folder (its latest checkpoint)")
    p.add_argument("-o", "--output", required=True, help="folder to write the slim tokenizer to")


def run(args: argparse.Namespace) -> int:
    from ..training.export import export

    out = export(args.checkpoint, args.output)
    print(f"exported {args.checkpoint} -> {out}")
    return 0
