"""``vqct export CHECKPOINT -o OUT``: a training checkpoint as a slim tokenizer folder."""

from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a ckpt_XXXXXXXX.pt file, or a run folder (its latest checkpoint)")
    p.add_argument("-o", "--output", required=True, help="folder to write the slim tokenizer to (a new or empty one)")
    p.add_argument("--resolution", type=int, default=None,
                   help="working resolution of the exported model (what encode resizes to); only for models "
                        "without attention resolutions, e.g. a fully convolutional model trained on crops")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="storage precision of the weights (loading upcasts to float32); the codebook stays float32")
    p.add_argument("--keep-float32", nargs="*", default=[], metavar="MODULE",
                   help="modules stored in float32 whatever --dtype, e.g. model.encoder model.quant_conv "
                        "(the encoder alone decides the tokens)")
    p.add_argument("--max-shard-mib", type=float, default=None,
                   help="split the weights into shards of at most this many MiB, with model.safetensors.index.json")
    p.add_argument("--force", action="store_true",
                   help="write even into a non-empty folder, or into the package's or weights/ shipped models")


def run(args: argparse.Namespace) -> int:
    from ..training.export import export
    from .outputs import check_output_folder

    import torch

    check_output_folder(args.output, args.force, "tokenizer")
    if args.max_shard_mib is not None and args.max_shard_mib <= 0:
        raise ValueError(f"--max-shard-mib must be positive, got {args.max_shard_mib}")
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    shard = None if args.max_shard_mib is None else int(args.max_shard_mib * 2**20)
    out = export(args.checkpoint, args.output, args.resolution, dtype=dtype, max_shard_bytes=shard,
                 keep_float32=tuple(args.keep_float32))
    print(f"exported {args.checkpoint} -> {out}")
    return 0
