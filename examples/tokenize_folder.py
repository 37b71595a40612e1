"""Tokenize every image of a folder into one token file (the format `vqct encode` writes).

    python examples/tokenize_folder.py examples/images -o tokens.pt [--model vqct-faces64]

The file holds the grids, the image paths and sizes, the model and its token layout, so
`vqct decode tokens.pt -o decoded/` or `load_token_dataset("tokens.pt")` can use it. For whole
datasets (sharded, resumable, multi-GPU) use `vqct encode-dataset` instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.defaults import DEFAULT_MODEL
from vqct_tokenizer.tokens import encoded_tokens, write_token_file

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="a .pt, .json or .npy token file")
    p.add_argument("--model", default=DEFAULT_MODEL)
    args = p.parse_args(argv)

    tok = VQCTTokenizer.from_pretrained(args.model)
    files = [str(f) for f in sorted(args.folder.iterdir()) if f.suffix.lower() in SUFFIXES]
    tokens, sizes = tok.encode(files, return_image_sizes=True)  # (B, h, w, k+1), original (height, width)s
    write_token_file(args.output, encoded_tokens(tok, list(tokens), files, sizes, resized=True))
    print(f"{len(files)} images -> {args.output} (grids of shape {tuple(tokens.shape[1:])})")


if __name__ == "__main__":
    main()
