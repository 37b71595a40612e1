"""``vqct encode | decode | reconstruct | describe``: the tokenizer on the command line.

``vqct encode`` writes, and ``vqct decode`` reads, the token files of ``vqct_tokenizer.tokens.files``
(.pt and .json: tokens, image paths and sizes, model, config hash and ``VQCTConfig.token_layout``;
.npy: the bare int64 array). Every file is written atomically. On untrusted input the work per
image is bounded by one limit, ``--max-pixels``, on every command here: the largest native image to
encode or decode (and the largest file to read); errors name it, also when memory runs out.
``vqct decode --max-cells`` (the same bound in cells) is kept for older scripts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..image_io import check_native_size, native_file_limit
from ..runtime import resolve_device
from ..tokens.files import StoredTokens, check_same_model, encoded_tokens, read_token_file, token_suffix, \
    write_token_file
from .outputs import check_image_output, output_paths, save_image


# ---------------------------------------------------------------------------------------- arguments
def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    from PIL import Image

    from ..defaults import DEFAULT_MODEL
    from ..tokenizer import DEFAULT_MAX_NATIVE_PIXELS

    if name == "encode":
        parser.add_argument("images", nargs="+", metavar="IMG", help="image files to tokenize")
        parser.add_argument("-o", "--output", required=True, type=Path,
                            help="token file: .pt or .json (tokens, image paths and sizes, model) or .npy (the array only)")
    elif name == "decode":
        parser.add_argument("tokens", type=Path, metavar="TOKENS", help="a .pt, .json or .npy file from `vqct encode`")
        parser.add_argument("-o", "--output", required=True, type=Path,
                            help="image file (several images become NAME_0.png, NAME_1.png, ...) or a directory")
    elif name == "reconstruct":
        parser.add_argument("images", nargs="+", metavar="IMG", help="image files to encode and decode")
        parser.add_argument("-o", "--output", required=True, type=Path,
                            help="image file (several images become NAME_0.png, ...) or a directory")
        parser.add_argument("--side-by-side", action="store_true",
                            help="save the original (as the model sees it) and the reconstruction side by side")
        parser.add_argument("--words", action="store_true", help="also print each image's word grid")
    elif name == "describe":
        parser.add_argument("images", nargs="+", metavar="IMG", help="image files to describe")
    else:
        raise ValueError(f"vqct_tokenizer.cli.tokens has no command {name!r}")

    if name == "decode":  # a token file records its model: decode with that one unless told otherwise
        parser.add_argument("--model", default=None,
                            help="tokenizer folder, shipped model name or Hub repo id (default: the model recorded "
                                 f"in a .pt/.json token file, else {DEFAULT_MODEL})")
    else:
        parser.add_argument("--model", default=DEFAULT_MODEL,
                            help=f"tokenizer folder, shipped model name or Hub repo id (default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    if name != "decode":
        size = parser.add_mutually_exclusive_group()
        size.add_argument("--resize", dest="resize", action="store_true", default=True,
                          help="resize and center-crop to the model's resolution, as set in its config.json (default)")
        size.add_argument("--native", dest="resize", action="store_false",
                          help="keep each image's own size (padded to a multiple of the downsampling factor)")
        parser.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                            help=f"at --native, the largest image to encode and decode, in pixels after padding "
                                 f"(default: {DEFAULT_MAX_NATIVE_PIXELS:,}); without --native, the largest image "
                                 f"file to read (default: PIL's limit, {Image.MAX_IMAGE_PIXELS:,}). Bounds memory "
                                 "and time on untrusted input")
    else:
        parser.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                            help="largest image to decode, in pixels: the --max-pixels of the encode "
                                 f"(default: {DEFAULT_MAX_NATIVE_PIXELS:,}); bounds memory and time on untrusted input")
        parser.add_argument("--max-cells", type=_positive_int, default=None, metavar="N",
                            help="the same bound in token-grid cells h*w (older form of --max-pixels)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    commands = {"encode": run_encode, "decode": run_decode, "reconstruct": run_reconstruct, "describe": run_describe}
    max_pixels = getattr(args, "max_pixels", None)
    if max_pixels is None or args.command == "decode":
        return commands[args.command](args)
    # --max-pixels is also the largest file to read: PIL's limit, for this command only (main() may
    # run inside a longer process, e.g. a test session)
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        return commands[args.command](args)
    finally:
        Image.MAX_IMAGE_PIXELS = before


# ---------------------------------------------------------------------------------------- commands
def run_encode(args: argparse.Namespace) -> int:
    token_suffix(args.output)  # refused before the model is loaded
    tok = load_tokenizer(args.model, args.device, max_pixels=args.max_pixels)
    paths = [str(p) for p in args.images]
    tokens, sizes = tok.encode(paths, resize=args.resize, return_image_sizes=True)
    grids = list(tokens) if isinstance(tokens, list) else list(tokens.unbind(0))
    write_token_file(args.output, encoded_tokens(tok, grids, paths, sizes, resized=args.resize))
    shapes = sorted({tuple(g.shape) for g in grids})
    print(f"wrote {args.output}: {len(grids)} image(s), token grid {' / '.join(str(s) for s in shapes)}")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    check_image_output(args.output)
    stored = read_token_file(args.tokens)
    model = decode_model(args.model, stored)
    try:
        tok = load_tokenizer(model, args.device, max_pixels=args.max_pixels)
    except (OSError, ValueError) as e:
        if args.model is not None:
            raise
        raise type(e)(f"{e} (the model recorded in {args.tokens}; pass --model to use another)") from e
    if args.model is None and stored.model:
        print(f"decoding {args.tokens} with its recorded model {model!r} (pass --model to choose another)",
              file=sys.stderr)
    if args.max_cells is not None:
        tok.max_decode_cells = args.max_cells
    check_same_model(stored, tok, args.tokens)
    images = decode_grids(tok, stored)
    targets = output_paths(args.output, len(images), stored.stems())
    for image, target in zip(images, targets):
        save_image(image, target)
    print(f"wrote {len(targets)} image(s): {', '.join(str(t) for t in targets)}")
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    from ..image_io import load_image, side_by_side

    check_image_output(args.output)
    tok = load_tokenizer(args.model, args.device, max_pixels=args.max_pixels)
    targets = output_paths(args.output, len(args.images), [Path(p).stem for p in args.images])
    for path, target in zip(args.images, targets):
        if args.resize:
            image = load_image(path)
        else:  # check here, from the header, where the file name is known (encode sees a PIL image)
            def size_check(h: int, w: int, name: str = str(path)) -> None:
                check_native_size(h, w, tok.downsample_factor, tok.max_native_pixels, name, tok.native_memory_bytes)

            image = load_image(path, *native_file_limit(tok.max_native_pixels), size_check)
        tokens, size = tok.encode(image, resize=args.resize, return_image_sizes=True)
        out = tok.decode(tokens, image_size=None if args.resize else size)
        if args.side_by_side:
            out = side_by_side([model_view(tok, image, resize=args.resize), out])
        save_image(out, target)
        if args.words:
            grid = tok.describe(tokens)
            print(f"==> {path}: {len(grid)}x{len(grid[0])} cells, each '{_cell_legend(tok)}' <==")
            print(tok.format_grid(grid))
    print(f"wrote {len(targets)} image(s): {', '.join(str(t) for t in targets)}")
    return 0


def _cell_legend(tok) -> str:
    return " ".join(g.name for g in tok.config.groups for _ in range(g.k))


def run_describe(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.model, args.device, max_pixels=args.max_pixels)
    for i, path in enumerate(args.images):
        grid = tok.describe(tok.encode(str(path), resize=args.resize))
        if len(args.images) > 1:
            print(("\n" if i else "") + f"==> {path} <==")
        print(tok.format_grid(grid))
    return 0


# ---------------------------------------------------------------------------------------- model
def load_tokenizer(model: str, device: str, max_pixels: int | None = None):
    """The tokenizer on ``device`` ("auto": cuda if available), with ``max_pixels`` (--max-pixels) as
    its native-size limit (run() sets the file-reading limit)."""
    from ..defaults import DEFAULT_MODEL, find_shipped
    from ..tokenizer import VQCTTokenizer

    if model == DEFAULT_MODEL and find_shipped(model) is None and not Path(model).is_dir():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} is not installed: its weights belong in weights/{DEFAULT_MODEL}/ "
            f"of a source checkout (or vqct_tokenizer/_weights/{DEFAULT_MODEL}/ when installed). "
            "Pass --model with a tokenizer folder or a Hugging Face Hub repo id")
    tok = VQCTTokenizer.from_pretrained(model, device=resolve_device(device))
    if max_pixels is not None:
        tok.max_native_pixels = max_pixels
    return tok


def decode_model(model: str | None, stored: StoredTokens) -> str:
    """--model if given, else the model recorded in the token file, else the default model."""
    from ..defaults import DEFAULT_MODEL

    if model is not None:
        return model
    if stored.model:
        return stored.model
    return DEFAULT_MODEL


def model_view(tok, image, resize: bool):
    """The image as the encoder sees it (resized and cropped, or at native size), as PIL."""
    from ..image_io import to_output
    from ..image_processor import ImageProcessor

    [x], _, [(h, w)] = tok.preprocess(image, resize=resize)
    x = ImageProcessor.denormalize(x)
    if not resize:
        x = x[:, :h, :w]
    return to_output(x[None], "pil")[0]


def decode_grids(tok, stored: StoredTokens) -> list:
    """Decode every grid to PIL, cropping native-size encodes back to their original size."""
    import torch

    grids = [tok.check_tokens(g) for g in stored.grids]
    if len({tuple(g.shape) for g in grids}) == 1:
        images = tok.decode(torch.stack(grids))
    else:
        images = [tok.decode(g) for g in grids]
    if stored.resized is False and stored.image_sizes is not None:
        images = [im.crop((0, 0, w, h)) for im, (h, w) in zip(images, stored.image_sizes)]
    return images
