"""``vqct encode | decode | reconstruct | describe``: the tokenizer on the command line.

Token files written by ``vqct encode``:

* ``.pt`` (``torch.save`` of a dict, read back with ``torch.load(weights_only=True)``) and ``.json``
  hold the tokens together with everything needed to decode them faithfully::

      format        "vqct-tokens"           version   1
      tokens        .pt: LongTensor (B, h, w, k+1), or a list of (h_i, w_i, k+1) grids when
                    native sizes differ; .json: a list with one nested (h, w, k+1) list per image
      image_paths   the input paths, as given
      image_sizes   original [H, W] of each image
      resized       false for --native: decode crops back to image_sizes
      model         the --model that made them;  config_hash   its VQCTConfig.architecture_hash()
      layout        slot names and id ranges, e.g. slots ["adjective", "adjective", "noun"]

* ``.npy`` holds only the int64 array (B, h, w, k+1), readable with ``numpy.load`` anywhere. It
  cannot record image sizes, so at native size it is refused unless every image has the same size
  and needs no padding.

Every file is written atomically. On untrusted input the work per image is bounded: ``--max-pixels``
(encode, reconstruct, describe) and ``--max-cells`` (decode) raise the bounds, and the errors name them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..image_io import check_native_size, native_file_limit

TOKEN_SUFFIXES = (".npy", ".pt", ".json")
FORMAT_NAME = "vqct-tokens"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------- arguments
def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
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
                            help="largest image to read, in pixels (default: PIL's 89478485), and at --native the "
                                 f"largest to encode after padding (default: {DEFAULT_MAX_NATIVE_PIXELS} = 2048x2048); "
                                 "bounds memory and time on untrusted input")
    else:
        parser.add_argument("--max-cells", type=_positive_int, default=None, metavar="N",
                            help="largest token grid to decode, in cells h*w (default: 2048*2048 pixels' worth, "
                                 "i.e. 2048*2048 / f**2); bounds memory and time on untrusted input")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    commands = {"encode": run_encode, "decode": run_decode, "reconstruct": run_reconstruct, "describe": run_describe}
    max_pixels = getattr(args, "max_pixels", None)
    if max_pixels is None:
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
    suffix = token_suffix(args.output)
    tok = load_tokenizer(args.model, args.device, max_pixels=args.max_pixels)
    paths = [str(p) for p in args.images]
    tokens, sizes = tok.encode(paths, resize=args.resize, return_image_sizes=True)
    grids = list(tokens) if isinstance(tokens, list) else list(tokens.unbind(0))
    grids = [g.cpu() for g in grids]
    if suffix == ".npy":
        array = npy_array(grids, sizes, tok.downsample_factor, resized=args.resize)
        write_npy(args.output, array)
    else:
        payload = token_payload(tok, grids, paths, sizes, resized=args.resize)
        write_token_file(args.output, payload)
    shapes = sorted({tuple(g.shape) for g in grids})
    print(f"wrote {args.output}: {len(grids)} image(s), token grid {' / '.join(str(s) for s in shapes)}")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    check_image_output(args.output)
    stored = read_token_file(args.tokens)
    model = decode_model(args.model, stored)
    try:
        tok = load_tokenizer(model, args.device)
    except (OSError, ValueError) as e:
        if args.model is not None:
            raise
        raise type(e)(f"{e} (the model recorded in {args.tokens}; pass --model to use another)") from e
    if args.model is None and stored.model:
        print(f"decoding {args.tokens} with its recorded model {model!r} (pass --model to choose another)",
              file=sys.stderr)
    if args.max_cells is not None:
        tok.max_decode_cells = args.max_cells
    check_same_model(tok, stored, args.tokens)
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
        else:  # check here, where the file name is known (encode sees a PIL image)
            image = load_image(path, *native_file_limit(tok.max_native_pixels))
            check_native_size(image.height, image.width, tok.downsample_factor, tok.max_native_pixels, str(path))
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
    import torch

    from ..defaults import DEFAULT_MODEL, find_shipped
    from ..tokenizer import VQCTTokenizer

    if model == DEFAULT_MODEL and find_shipped(model) is None and not Path(model).is_dir():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} is not installed: its weights belong in weights/{DEFAULT_MODEL}/ "
            f"of a source checkout (or vqct_tokenizer/_weights/{DEFAULT_MODEL}/ when installed). "
            "Pass --model with a tokenizer folder or a Hugging Face Hub repo id")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = VQCTTokenizer.from_pretrained(model, device=device)
    if max_pixels is not None:
        tok.max_native_pixels = max_pixels
    return tok


def decode_model(model: str | None, stored: "StoredTokens") -> str:
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

    [x], _, [(h, w)] = tok.preprocess(image, resize=resize)
    x = x.add(1.0).mul(0.5).clamp(0.0, 1.0)
    if not resize:
        x = x[:, :h, :w]
    return to_output(x[None], "pil")[0]


def check_same_model(tok, stored: "StoredTokens", source: Path) -> None:
    """Refuse tokens made by another model: by config hash, else by the recorded slots and id ranges."""
    if stored.config_hash is not None and stored.config_hash != tok.config.architecture_hash():
        raise ValueError(f"{source} was encoded by model {stored.model!r} (config hash {stored.config_hash}), but the "
                         f"loaded model {tok.name_or_path!r} has config hash {tok.config.architecture_hash()}; "
                         f"decode with --model {stored.model}")
    if isinstance(stored.layout, dict):  # a hand-made or edited file may have a layout and no hash
        expected = token_layout(tok)
        differ = sorted(k for k in expected if k in stored.layout and stored.layout[k] != expected[k])
        if differ:
            raise ValueError(f"{source}: its token layout disagrees with model {tok.name_or_path!r} in "
                             f"{', '.join(differ)} (file {[stored.layout[k] for k in differ]} vs model "
                             f"{[expected[k] for k in differ]}); decode with the model that encoded it"
                             + (f" (--model {stored.model})" if stored.model else ""))


def decode_grids(tok, stored: "StoredTokens") -> list:
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


# ---------------------------------------------------------------------------------------- token files
def token_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in TOKEN_SUFFIXES:
        raise ValueError(f"token file {path} must end in one of {', '.join(TOKEN_SUFFIXES)}")
    return suffix


def token_layout(tok) -> dict[str, Any]:
    cfg = tok.config
    slots = [g.name for g in cfg.groups for _ in range(g.k)]
    return {
        "axes": ["image", "row", "column", "slot"],
        "slots": slots,
        "id_ranges": {g.name: [g.code_start, g.code_end] for g in cfg.groups},
        "vocab_size": cfg.codebook_size,
        "downsample_factor": cfg.downsample_factor,
    }


def token_payload(tok, grids: list, paths: list[str], sizes: list[tuple[int, int]], resized: bool) -> dict[str, Any]:
    import torch

    same_shape = len({tuple(g.shape) for g in grids}) == 1
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tokens": torch.stack(grids) if same_shape else grids,
        "image_paths": list(paths),
        "image_sizes": [[int(h), int(w)] for h, w in sizes],
        "resized": bool(resized),
        "model": str(tok.name_or_path),
        "config_hash": tok.config.architecture_hash(),
        "layout": token_layout(tok),
    }


def npy_array(grids: list, sizes: list[tuple[int, int]], factor: int, resized: bool):
    """Stack grids into the (B, h, w, k+1) int64 array of a .npy file, if that loses nothing."""
    import torch

    if not resized:
        shapes = {tuple(g.shape) for g in grids}
        if len(shapes) > 1 or len(set(sizes)) > 1:
            raise ValueError("images of different sizes at --native size cannot share one .npy array; "
                             "write .pt or .json, which keep each image's tokens and size")
        (h, w), grid = sizes[0], grids[0]
        if (h, w) != (grid.shape[0] * factor, grid.shape[1] * factor):
            raise ValueError(f"at --native size a {w}x{h} image is padded to a multiple of {factor}, and a .npy "
                             "file cannot record the size to crop back to; write .pt or .json instead")
    return torch.stack(grids).numpy().astype("int64")


# Token and image files are written through atomic_write: a crash, a full disk or an error halfway
# leaves an existing file as it was, never a torn one.
def write_npy(path: Path, array) -> None:
    import numpy as np

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temp name
            np.save(f, array, allow_pickle=False)

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def write_token_file(path: Path, payload: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".pt":
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
        return
    tokens = payload["tokens"]
    grids = tokens.unbind(0) if isinstance(tokens, torch.Tensor) else tokens
    text = json.dumps(dict(payload, tokens=[g.tolist() for g in grids])) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@dataclass
class StoredTokens:
    """A token file read back: one (h, w, k+1) grid per image, and what is known about them."""

    grids: list
    image_paths: list[str] | None = None
    image_sizes: list[tuple[int, int]] | None = None
    resized: bool | None = None
    model: str | None = None
    config_hash: str | None = None
    layout: dict | None = None

    def stems(self) -> list[str] | None:
        return [Path(p).stem for p in self.image_paths] if self.image_paths else None


def read_token_file(path: Path) -> StoredTokens:
    """Read a .npy, .pt or .json token file without unpickling anything; TokenError if it is unusable."""
    from ..errors import TokenError

    suffix = token_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file not found: {path}")
    try:
        raw = {".npy": _load_npy, ".pt": _load_pt, ".json": _load_json}[suffix](path)
    except Exception as e:  # every parser fails its own way on a corrupt file
        raise TokenError(f"{path} is not a readable {suffix} token file ({type(e).__name__}: {e})") from e
    try:
        return parse_token_data(raw)
    except TokenError as e:
        raise TokenError(f"{path}: {e}") from e


def _load_npy(path: Path):
    import numpy as np

    return np.load(path, allow_pickle=False)


def _load_pt(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def parse_token_data(raw: Any) -> StoredTokens:
    """A bare array/tensor/nested list is one grid (h, w, k+1) or a batch; a dict is a full token file."""
    from ..errors import TokenError

    if not isinstance(raw, dict):
        return StoredTokens(grids=split_grids(raw))
    if raw.get("format", FORMAT_NAME) != FORMAT_NAME or "tokens" not in raw:
        raise TokenError(f"not a {FORMAT_NAME} file (expected a 'tokens' entry)")
    version = raw.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TokenError(f"token file version {version!r} is not one this vqct-tokenizer reads "
                         f"(up to {FORMAT_VERSION}); upgrade vqct-tokenizer")
    tokens = raw["tokens"]
    if isinstance(tokens, list) and not tokens:
        raise TokenError("the file holds no tokens")
    grids = [_one_grid(t, i) for i, t in enumerate(tokens)] if _is_grid_list(tokens) else split_grids(tokens)
    model, layout = raw.get("model"), raw.get("layout")
    if model is not None and not isinstance(model, str):
        raise TokenError(f"'model' must be a string, got {type(model).__name__}")
    if layout is not None and not isinstance(layout, dict):
        raise TokenError(f"'layout' must be an object, got {type(layout).__name__}")
    stored = StoredTokens(grids=grids, resized=raw.get("resized"), model=model,
                          config_hash=raw.get("config_hash"), layout=layout)
    if raw.get("image_paths") is not None:
        stored.image_paths = [str(p) for p in _per_image(raw["image_paths"], len(grids), "image_paths")]
    if raw.get("image_sizes") is not None:
        stored.image_sizes = [_size(s) for s in _per_image(raw["image_sizes"], len(grids), "image_sizes")]
    return stored


def _is_grid_list(tokens: Any) -> bool:
    """A list of separate grids (tensors or nested lists), as opposed to one nested-list array."""
    import numpy as np
    import torch

    if isinstance(tokens, list) and tokens and isinstance(tokens[0], (torch.Tensor, np.ndarray)):
        return True
    # JSON: a list of (h, w, k+1) nested lists, one per image: depth 4 below the list
    depth, x = 0, tokens
    while isinstance(x, list) and x:
        depth, x = depth + 1, x[0]
    return depth == 4


def split_grids(tokens: Any) -> list:
    """An integer tensor/array/nested list of rank 3 (one grid) or 4 (a batch) -> list of grids."""
    import numpy as np
    import torch

    from ..errors import TokenError

    if isinstance(tokens, np.ndarray):
        if not np.issubdtype(tokens.dtype, np.integer):
            raise TokenError(f"tokens must be integers, got dtype {tokens.dtype}")
        tokens = torch.from_numpy(tokens.astype(np.int64))
    elif isinstance(tokens, list):
        try:
            tokens = torch.tensor(tokens)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TokenError(f"tokens are not a rectangular grid of integers ({e})") from e
    if not isinstance(tokens, torch.Tensor):
        raise TokenError(f"tokens must be an integer array, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TokenError(f"tokens must be integers, got dtype {tokens.dtype}")
    if tokens.ndim == 3:
        return [tokens]
    if tokens.ndim == 4:
        return list(tokens.unbind(0))
    raise TokenError(f"tokens must be (h, w, k+1) or (B, h, w, k+1), got shape {tuple(tokens.shape)}")


def _one_grid(tokens: Any, index: int):
    from ..errors import TokenError

    grids = split_grids(tokens)
    if len(grids) != 1 or grids[0].ndim != 3:
        raise TokenError(f"tokens of image {index} must be one (h, w, k+1) grid")
    return grids[0]


def _per_image(values: Any, count: int, key: str) -> list:
    from ..errors import TokenError

    if not isinstance(values, list) or len(values) != count:
        raise TokenError(f"'{key}' must be a list with one entry per image ({count})")
    return values


def _size(value: Any) -> tuple[int, int]:
    from ..errors import TokenError

    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise TokenError(f"image size {value!r} is not a pair of positive integers [H, W]")
    return int(value[0]), int(value[1])


# ---------------------------------------------------------------------------------------- image files
def check_image_output(path: Path) -> None:
    """Fail before any work if ``path`` is a file name PIL cannot write (a name without suffix is a folder)."""
    from PIL import Image

    if _is_directory_target(path):
        return
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write images as {path.suffix!r} ({path}); use .png, .jpg, .webp, ... "
                         "or a directory")


def _is_directory_target(path: Path) -> bool:
    return path.is_dir() or path.suffix == ""


def output_paths(output: Path, count: int, stems: list[str] | None) -> list[Path]:
    """Where to write ``count`` images.

    A directory (existing, or a name without suffix) gets STEM.png per image when the input stems
    are known and distinct, else image_0.png, image_1.png, ...; a file name is used as is for one
    image and becomes NAME_0.SUF, NAME_1.SUF, ... for several.
    """
    if _is_directory_target(output):
        if stems is None or len(set(stems)) != len(stems) or len(stems) != count:
            stems = [f"image_{i}" for i in range(count)]
        return [output / f"{stem}.png" for stem in stems]
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(count)]


def save_image(image, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions()[path.suffix.lower()]  # the temp name has no image suffix
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
