"""Tokenize every image of a folder and save the token grids, one .npy per image plus an index.

    python examples/tokenize_folder.py examples/images -o tokens/ [--model vqct-faces64]

For whole datasets (sharded, resumable, multi-GPU) use `vqct encode-dataset` instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.defaults import DEFAULT_MODEL

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--model", default=DEFAULT_MODEL)
    args = p.parse_args(argv)

    tok = VQCTTokenizer.from_pretrained(args.model)
    files = sorted(f for f in args.folder.iterdir() if f.suffix.lower() in SUFFIXES)
    args.output.mkdir(parents=True, exist_ok=True)
    tokens = tok.encode([str(f) for f in files])  # (B, h, w, k+1)
    index = {}
    for f, grid in zip(files, tokens):
        np.save(args.output / f"{f.stem}.npy", grid.cpu().numpy())
        index[f.name] = f"{f.stem}.npy"
    (args.output / "index.json").write_text(json.dumps({"model": args.model, "files": index}, indent=2))
    print(f"{len(files)} images -> {args.output} (grids of shape {tuple(tokens.shape[1:])})")


if __name__ == "__main__":
    main()
