"""``vqct train`` and its arguments."""

from __future__ import annotations

import argparse


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a JSON config file, or the name of a shipped config "
                   "(vqct_tokenizer/training/configs/NAME.json)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. data.train=../shared/data/faces256/train.txt optim.lr=1e-4")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.out_dir")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop this invocation after this many steps (the schedule still runs to optim.steps)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop this invocation after this many minutes of training, with a checkpoint at the last "
                        "step (--resume continues); for time-boxed machines")


def run(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..training.trainer import train

    cfg = load_config(args.config, args.overrides)
    if cfg["data"]["train"] is None:
        raise ValueError("no training data: set data.train=DIR_OR_LIST")
    out = train(cfg, resume=args.resume, max_steps=args.max_steps, max_minutes=args.max_minutes)
    print(f"done: {out}")
    return 0
