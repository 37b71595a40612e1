"""``vqct encode | decode | reconstruct | describe``: the tokenizer on the command line.

``vqct encode`` writes, and ``vqct decode`` reads, the token files of ``vqct_tokenizer.tokens.files``
(.pt and .json: tokens, image paths and sizes, model, config hash and ``VQCTConfig.token_layout``;
.npy: the bare int64 array). Every file is written atomically. On untrusted input the work per
image is bounded by one limit, ``--max-pixels``, on every command here: the largest native image to
encode or decode (and the largest file to read); errors name it, also when memory runs out.
``vqct decode --max-cells`` (the same bound in cells) is kept for older scripts.

Each command says what it did to every image: kept at its native size (and padded to a multiple of
f), or resized to the model's resolution (and how: centre crop, stretch or white padding). Defaults:
``reconstruct`` keeps the native size, since a user reconstructing a photo expects the whole photo
back at its size; ``encode`` and ``describe`` resize, so that every image of a token file has the
same grid (what models trained on the tokens expect) and ``describe`` shows what ``encode`` writes.
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
    from ..fast_decode import DECODE_PRECISIONS, DEFAULT_DECODE_PRECISION
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
        parser.add_argument("--full", action="store_true",
                            help="print the whole word grid, one row per line, instead of the summary")
        parser.add_argument("--top", type=positive_int, default=8, metavar="N",
                            help="the summary lists the N most frequent words of each group (default: 8)")
    else:
        raise ValueError(f"vqct_tokenizer.cli.tokens has no command {name!r}")

    if name == "decode":  # a token file records its model: decode with that one unless told otherwise
        parser.add_argument("--model", default=None,
                            help="tokenizer folder, shipped model name or Hub repo id (default: the model recorded "
                                 f"in a .pt/.json token file, else {DEFAULT_MODEL}; `vqct models` lists them)")
    else:
        parser.add_argument("--model", default=DEFAULT_MODEL,
                            help=f"tokenizer folder, shipped model name or Hub repo id (default: {DEFAULT_MODEL}; "
                                 "`vqct models` lists them)")
    parser.add_argument("--device", default="auto", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    if name in ("decode", "reconstruct"):
        parser.add_argument("--decode-precision", choices=DECODE_PRECISIONS, default=DEFAULT_DECODE_PRECISION,
                            help="how the decoder runs: bf16 (about twice as fast on CPUs with AVX512-BF16 or AMX; "
                                 "8-bit pixels within 2 levels of fp32), fp32 (the same pixels on every machine) or "
                                 "auto (bf16 where the hardware runs it natively, else fp32; default). Tokens are "
                                 "not affected")
    if name != "decode":
        native_default = name == "reconstruct"
        size = parser.add_mutually_exclusive_group()
        size.add_argument("--resize", dest="resize", action="store_true",
                          help="resize to the model's resolution as its config.json's resize_mode says (a centre "
                               "crop for the shipped models)" + ("" if native_default else " (default)"))
        size.add_argument("--native", dest="resize", action="store_false",
                          help="keep each image's own size, padded to a multiple of the downsampling factor f"
                               + ("; decode crops back" if name == "encode" else "")
                               + (" (default)" if native_default else ""))
        parser.set_defaults(resize=not native_default)
        if name in ("encode", "reconstruct"):
            parser.add_argument("--refine", type=non_negative_int, default=0, metavar="N",
                                help="fit each image's tokens to the decoder: search N token grids by gradient "
                                     "descent on the latent and keep the one that reconstructs the image best "
                                     "(never worse than the encoder's). About 0.7 s per step for a 256x256 image "
                                     "on two CPU cores; images up to 640 px a side (default: 0, off)")
        parser.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                            help=f"at --native, the largest image to encode and decode, in pixels after padding "
                                 f"(default: {DEFAULT_MAX_NATIVE_PIXELS:,}); without --native, the largest image "
                                 f"file to read (default: PIL's limit, {Image.MAX_IMAGE_PIXELS:,}). Bounds memory "
                                 "and time on untrusted input")
    else:
        parser.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                            help="largest image to decode, in pixels: the --max-pixels of the encode "
                                 f"(default: {DEFAULT_MAX_NATIVE_PIXELS:,}); bounds memory and time on untrusted input")
        parser.add_argument("--max-cells", type=positive_int, default=None, metavar="N",
                            help="the same bound in token-grid cells h*w (older form of --max-pixels)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
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
    tokens, sizes = tok.encode(paths, resize=args.resize, return_image_sizes=True, refine_steps=args.refine,
                               progress=args.refine > 1)
    grids = list(tokens) if isinstance(tokens, list) else list(tokens.unbind(0))
    write_token_file(args.output, encoded_tokens(tok, grids, paths, sizes, resized=args.resize))
    for path, size, grid in zip(paths, sizes, grids):
        print(what_was_done(tok, path, size, args.resize, grid.shape))
    shapes = sorted({tuple(g.shape) for g in grids})
    print(f"wrote {args.output}: {len(grids)} image(s), token grid {' / '.join(str(s) for s in shapes)}")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    check_image_output(args.output)
    stored = read_token_file(args.tokens)
    model = decode_model(args.model, stored)
    try:
        tok = load_tokenizer(model, args.device, max_pixels=args.max_pixels, decode_precision=args.decode_precision)
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
    tok = load_tokenizer(args.model, args.device, max_pixels=args.max_pixels, decode_precision=args.decode_precision)
    targets = output_paths(args.output, len(args.images), [Path(p).stem for p in args.images])
    for path, target in zip(args.images, targets):
        if args.resize:
            image = load_image(path)
        else:  # check here, from the header, where the file name is known (encode sees a PIL image)
            def size_check(h: int, w: int, name: str = str(path)) -> None:
                _check_native_size(tok, h, w, name)

            image = load_image(path, *native_file_limit(tok.max_native_pixels), size_check)
        tokens, size = tok.encode(image, resize=args.resize, return_image_sizes=True, refine_steps=args.refine,
                                  progress=args.refine > 1)
        out = tok.decode(tokens, image_size=None if args.resize else size)
        if args.side_by_side:
            out = side_by_side([model_view(tok, image, resize=args.resize), out])
        save_image(out, target)
        print(f"{what_was_done(tok, path, size, args.resize, tokens.shape)} -> wrote {target} "
              f"({out.width}x{out.height}{', original and reconstruction side by side' if args.side_by_side else ''})")
        if args.words:
            grid = tok.describe(tokens)
            print(f"==> {path}: {len(grid)}x{len(grid[0])} cells, each '{_cell_legend(tok)}' <==")
            print(tok.format_grid(grid))
    return 0


def _check_native_size(tok, h: int, w: int, name: str) -> None:
    """The native-size limit, with the other way out that reconstruct has: the model's resolution."""
    from ..errors import ImageError, PixelLimitError

    try:
        check_native_size(h, w, tok.downsample_factor, tok.max_native_pixels, name, tok.native_memory_bytes)
    except PixelLimitError as e:
        r = tok.config.resolution
        # an ImageError: load_image passes it on as it is (any other ValueError there means a corrupt file)
        raise ImageError(f"{e.cli_message()}; or rerun with --resize to reconstruct it at the model's {r}x{r}") from e


def _cell_legend(tok) -> str:
    return " ".join(g.name for g in tok.config.groups for _ in range(g.k))


def run_describe(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.model, args.device, max_pixels=args.max_pixels)
    for i, path in enumerate(args.images):
        tokens, size = tok.encode(str(path), resize=args.resize, return_image_sizes=True)
        done = what_was_done(tok, path, size, args.resize, tokens.shape)
        if i:
            print()
        if args.full:
            print(f"==> {done}, each cell '{_cell_legend(tok)}' <==")
            print(tok.format_grid(tok.describe(tokens)))
        else:
            print(done)
            for line in word_counts(tok, tokens, args.top):
                print("  " + line)
    if not args.full:
        print(f"(the {args.top} most frequent words of each group, with how many times each occurs; "
              "--full prints the whole grid)")
    return 0


# ---------------------------------------------------------------------------------------- reports
RESIZED = {"center_crop": "resized and centre-cropped", "resize": "stretched", "pad": "resized and padded with white"}


def what_was_done(tok, name, size: tuple[int, int], resize: bool, grid_shape) -> str:
    """One line on what encoding did to an image of ``size`` (H, W), e.g.
    "cat.jpg: 451x300, native (padded to 456x304), 38x57 cells" (cells: rows x columns)."""
    h, w = size
    cells = f"{grid_shape[0]}x{grid_shape[1]} cells"
    if not resize:
        f = tok.downsample_factor
        ph, pw = -(-h // f) * f, -(-w // f) * f
        padded = f" (padded to {pw}x{ph})" if (ph, pw) != (h, w) else ""
        return f"{name}: {w}x{h}, native{padded}, {cells}"
    r = tok.config.resolution
    if (h, w) == (r, r):
        how = "already the model's"
    else:
        how = "resized to" if h == w else f"{RESIZED[tok.config.resize_mode]} to"
    return f"{name}: {w}x{h} -> {how} {r}x{r}, {cells}"


def word_counts(tok, tokens, top: int) -> list[str]:
    """Per group of the grid (adjectives, nouns; codes for a plain VQ model): how many ids, how many
    distinct, and the ``top`` most frequent words with their counts."""
    import torch

    grid = tokens.reshape(-1, tokens.shape[-1]).cpu()
    lines, col = [], 0
    for group in tok.config.groups:
        ids, counts = torch.unique(grid[:, col:col + group.k], return_counts=True)
        col += group.k
        order = sorted(zip(counts.tolist(), ids.tolist()), key=lambda c: (-c[0], c[1]))[:top]
        words = ", ".join(f"{tok.vocab[i]} {n}" for n, i in order)
        per_cell = f", {group.k} per cell" if group.k > 1 else ""
        lines.append(f"{group.name}s ({int(counts.sum())} ids{per_cell}, {len(ids)} distinct): {words}")
    return lines


# ---------------------------------------------------------------------------------------- model
def load_tokenizer(model: str, device: str, max_pixels: int | None = None, decode_precision: str = "auto"):
    """The tokenizer on ``device`` ("auto": cuda if available), with ``max_pixels`` (--max-pixels) as
    its native-size limit (run() sets the file-reading limit) and ``decode_precision``."""
    from ..defaults import DEFAULT_MODEL, find_shipped
    from ..tokenizer import VQCTTokenizer

    if model == DEFAULT_MODEL and find_shipped(model) is None and not Path(model).is_dir():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} is not installed: its weights belong in weights/{DEFAULT_MODEL}/ "
            f"of a source checkout (or vqct_tokenizer/_weights/{DEFAULT_MODEL}/ when installed). "
            "Pass --model with a tokenizer folder or a Hugging Face Hub repo id")
    tok = VQCTTokenizer.from_pretrained(model, device=resolve_device(device), decode_precision=decode_precision)
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
