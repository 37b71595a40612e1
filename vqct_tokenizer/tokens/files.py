"""Token files: what ``vqct encode`` writes and ``vqct decode`` and ``load_token_dataset`` read.

* ``.pt`` (``torch.save`` of a dict, read back with ``torch.load(weights_only=True)``) and ``.json``
  hold the tokens together with everything needed to decode them faithfully::

      format        "vqct-tokens"           version   2 (1 is still read)
      tokens        .pt: LongTensor (B, h, w, k+1), or a list of (h_i, w_i, k+1) grids when
                    native sizes differ; .json: a list with one nested (h, w, k+1) list per image
      image_paths   the input paths, as given
      image_sizes   original [H, W] of each image
      resized       false for --native: decode crops back to image_sizes
      model         the model that made them;  config_hash   its VQCTConfig.architecture_hash()
      layout        VQCTConfig.token_layout(): slots, groups and id ranges, vocabulary, grid
                    (version 1: slots and id_ranges {name: [start, end]}; read as the same layout)

* ``.npy`` holds only the int64 array (B, h, w, k+1), readable with ``numpy.load`` anywhere. It
  cannot record image sizes, so at native size it is refused unless every image has the same size
  and needs no padding.

Files are written atomically and read without unpickling anything; a file that is corrupt, holds
the wrong thing, or contradicts its own layout raises TokenError (a ValueError) naming the file.

    from vqct_tokenizer.tokens import encoded_tokens, read_token_file, write_token_file
    tokens, sizes = tok.encode(paths, return_image_sizes=True)
    write_token_file("t.pt", encoded_tokens(tok, list(tokens), paths, sizes, resized=True))
    stored = read_token_file("t.pt")        # StoredTokens: grids, image_paths, image_sizes, layout, ...
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import TokenError
from .layout import check_ids, check_layout, layout_differences, upgrade_layout

TOKEN_SUFFIXES = (".npy", ".pt", ".json")
FORMAT_NAME = "vqct-tokens"
#: 2: the layout of ``VQCTConfig.token_layout``; 1: slots and id_ranges
FORMAT_VERSION = 2


@dataclass
class StoredTokens:
    """Token grids of a file, one (h, w, k+1) LongTensor per image, and what is known about them.

    A bare array (``.npy``, or a file holding only a list) knows only its grids; the other fields are None.
    """

    grids: list[torch.Tensor]
    image_paths: list[str] | None = None
    image_sizes: list[tuple[int, int]] | None = None
    resized: bool | None = None
    model: str | None = None
    config_hash: str | None = None
    layout: dict[str, Any] | None = None

    def stems(self) -> list[str] | None:
        return [Path(p).stem for p in self.image_paths] if self.image_paths else None


def token_suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in TOKEN_SUFFIXES:
        raise ValueError(f"token file {path} must end in one of {', '.join(TOKEN_SUFFIXES)}")
    return suffix


def encoded_tokens(tok, grids: list[torch.Tensor], image_paths: list[str], image_sizes: list[tuple[int, int]],
                   resized: bool) -> StoredTokens:
    """What ``tok.encode(image_paths, resize=resized, return_image_sizes=True)`` gave, ready to write."""
    grids = [g.cpu() for g in grids]
    shapes = {tuple(g.shape[:2]) for g in grids}
    grid = next(iter(shapes)) if resized and len(shapes) == 1 else None
    return StoredTokens(grids=grids, image_paths=[str(p) for p in image_paths],
                        image_sizes=[(int(h), int(w)) for h, w in image_sizes], resized=bool(resized),
                        model=str(tok.name_or_path), config_hash=tok.config.architecture_hash(),
                        layout=tok.config.token_layout(grid))


# ---------------------------------------------------------------------------------------- writing
def write_token_file(path: str | os.PathLike, stored: StoredTokens) -> None:
    """Write ``stored`` as .pt, .json or .npy (by the suffix), atomically: a crash, a full disk or an
    error halfway leaves an existing file as it was, never a torn one."""
    path = Path(path)
    suffix = token_suffix(path)
    if suffix == ".npy":
        array = npy_array(stored)  # refused before anything is written

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the temp name
                np.save(f, array, allow_pickle=False)
    elif suffix == ".pt":
        payload = _payload(stored)

        def write(tmp: str) -> None:
            torch.save(payload, tmp)
    else:
        text = json.dumps(dict(_payload(stored), tokens=[g.tolist() for g in stored.grids])) + "\n"

        def write(tmp: str) -> None:
            Path(tmp).write_text(text, encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)


def _payload(stored: StoredTokens) -> dict[str, Any]:
    grids = stored.grids
    same_shape = len({tuple(g.shape) for g in grids}) == 1
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "tokens": torch.stack(grids) if same_shape else list(grids),
        "image_paths": stored.image_paths,
        "image_sizes": [[h, w] for h, w in stored.image_sizes] if stored.image_sizes is not None else None,
        "resized": stored.resized,
        "model": stored.model,
        "config_hash": stored.config_hash,
        "layout": stored.layout,
    }


def npy_array(stored: StoredTokens) -> np.ndarray:
    """Stack the grids into the (B, h, w, k+1) int64 array of a .npy file, if that loses nothing."""
    grids, sizes = stored.grids, stored.image_sizes
    if stored.resized is False:
        if len({tuple(g.shape) for g in grids}) > 1 or (sizes is not None and len(set(sizes)) > 1):
            raise ValueError("images of different sizes at --native size cannot share one .npy array; "
                             "write .pt or .json, which keep each image's tokens and size")
        factor = (stored.layout or {}).get("downsample_factor")
        grid = grids[0]
        if sizes is not None and factor is not None and \
                tuple(sizes[0]) != (grid.shape[0] * factor, grid.shape[1] * factor):
            h, w = sizes[0]
            raise ValueError(f"at --native size a {w}x{h} image is padded to a multiple of {factor}, and a .npy "
                             "file cannot record the size to crop back to; write .pt or .json instead")
    return torch.stack(list(grids)).numpy().astype(np.int64)


# ---------------------------------------------------------------------------------------- reading
def read_token_file(path: str | os.PathLike) -> StoredTokens:
    """Read a .npy, .pt or .json token file without unpickling anything; TokenError if it is unusable."""
    path = Path(path)
    suffix = token_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file not found: {path}")
    loader = {".npy": _load_npy, ".pt": _load_pt, ".json": _load_json}[suffix]
    try:
        raw = loader(path)
    except PermissionError:
        raise
    except Exception as e:  # every parser fails its own way on a corrupt file
        # in our words: the parsers' own messages advise unsafe loading (weights_only=False,
        # allow_pickle=True) or filing an issue upstream, which is wrong for a file that is simply not ours
        raise TokenError(f"{path} is not a token file written by vqct-tokenizer: {_unreadable_reason(suffix, e)}") from e
    try:
        return parse_token_data(raw)
    except TokenError as e:
        raise TokenError(f"{path}: {e}") from e


def _load_npy(path: Path) -> Any:
    return np.load(path, allow_pickle=False)


def _load_pt(path: Path) -> Any:
    with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _unreadable_reason(suffix: str, e: Exception) -> str:
    """Why a file could not be parsed, in a few words of our own."""
    text = str(e)
    if suffix == ".json":
        if isinstance(e, json.JSONDecodeError):
            return f"it is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        if isinstance(e, UnicodeDecodeError):
            return "it is not UTF-8 text"
        return f"it could not be read ({type(e).__name__})"
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)  # torch: a pickled class or function
    # numpy: an object array in a real .npy file (it calls any other file "pickled data": not so here)
    if found or (suffix == ".npy" and "Object arrays" in text):
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds pickled Python objects{what}, which are never unpickled here; a token file holds "
                "only integer arrays, lists, strings and numbers")
    kind = "a PyTorch file" if suffix == ".pt" else "a NumPy .npy array"
    return f"it is not {kind} (corrupt, truncated, or another kind of file)"


def parse_token_data(raw: Any) -> StoredTokens:
    """A bare array/tensor/nested list is one grid (h, w, k+1) or a batch; a dict is a full token file."""
    if not isinstance(raw, dict):
        return StoredTokens(grids=split_grids(raw))
    if raw.get("format", FORMAT_NAME) != FORMAT_NAME or "tokens" not in raw:
        keys = ", ".join(repr(k) for k in list(raw)[:5]) + (", ..." if len(raw) > 5 else "")
        raise TokenError(f"not a token file written by vqct-tokenizer (it has no 'tokens' entry, or another "
                         f"'format': its keys are {keys or 'none'})")
    version = raw.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise TokenError(f"token file version {version!r} is not one this vqct-tokenizer reads "
                         f"(1 to {FORMAT_VERSION}); upgrade vqct-tokenizer")
    tokens = raw["tokens"]
    if isinstance(tokens, list) and not tokens:
        raise TokenError("the file holds no tokens")
    grids = [_one_grid(t, i) for i, t in enumerate(tokens)] if _is_grid_list(tokens) else split_grids(tokens)
    model, layout = raw.get("model"), raw.get("layout")
    if model is not None and not isinstance(model, str):
        raise TokenError(f"'model' must be a string, got {type(model).__name__}")
    if layout is not None and not isinstance(layout, dict):
        raise TokenError(f"'layout' must be an object, got {type(layout).__name__}")
    stored = StoredTokens(grids=grids, resized=raw.get("resized"), model=model, config_hash=raw.get("config_hash"),
                          layout=upgrade_layout(layout) if layout is not None else None)
    if raw.get("image_paths") is not None:
        stored.image_paths = [str(p) for p in _per_image(raw["image_paths"], len(grids), "image_paths")]
    if raw.get("image_sizes") is not None:
        stored.image_sizes = [_size(s) for s in _per_image(raw["image_sizes"], len(grids), "image_sizes")]
    if stored.layout is not None and "groups" in stored.layout:
        _check_against_layout(grids, stored.layout)
    return stored


def _check_against_layout(grids: list[torch.Tensor], layout: dict[str, Any]) -> None:
    """The grids must be what their own recorded layout says: slots per cell, grid shape, id ranges."""
    try:
        check_layout(layout)
    except ValueError as e:
        raise TokenError(f"malformed layout ({e})") from e
    k1, grid = layout["tokens_per_cell"], layout["grid"]
    for i, g in enumerate(grids):
        if g.shape[-1] != k1 or (grid is not None and list(g.shape[:2]) != grid):
            want = f"({', '.join(map(str, grid))}, {k1})" if grid is not None else f"(h, w, {k1})"
            raise TokenError(f"tokens of image {i} have shape {tuple(g.shape)}, but the file's layout says {want}")
        check_ids(g, layout, f"image {i}")


def _is_grid_list(tokens: Any) -> bool:
    """A list of separate grids (tensors or nested lists), as opposed to one nested-list array."""
    if isinstance(tokens, list) and tokens and isinstance(tokens[0], (torch.Tensor, np.ndarray)):
        return True
    # JSON: a list of (h, w, k+1) nested lists, one per image: depth 4 below the list
    depth, x = 0, tokens
    while isinstance(x, list) and x:
        depth, x = depth + 1, x[0]
    return depth == 4


def split_grids(tokens: Any) -> list[torch.Tensor]:
    """An integer tensor/array/nested list of rank 3 (one grid) or 4 (a batch) -> list of LongTensor grids."""
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
    tokens = tokens.long()
    if tokens.ndim == 3:
        return [tokens]
    if tokens.ndim == 4:
        return list(tokens.unbind(0))
    raise TokenError(f"tokens must be (h, w, k+1) or (B, h, w, k+1), got shape {tuple(tokens.shape)}")


def _one_grid(tokens: Any, index: int) -> torch.Tensor:
    grids = split_grids(tokens)
    if len(grids) != 1 or grids[0].ndim != 3:
        raise TokenError(f"tokens of image {index} must be one (h, w, k+1) grid")
    return grids[0]


def _per_image(values: Any, count: int, key: str) -> list:
    if not isinstance(values, list) or len(values) != count:
        raise TokenError(f"'{key}' must be a list with one entry per image ({count})")
    return values


def _size(value: Any) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise TokenError(f"image size {value!r} is not a pair of positive integers [H, W]")
    return int(value[0]), int(value[1])


# ---------------------------------------------------------------------------------------- model check
def check_same_model(stored: StoredTokens, tok, source: str | os.PathLike) -> None:
    """ValueError if ``stored`` was made by another model than ``tok``: by config hash, else by the
    recorded layout (slots, groups and id ranges, vocabulary, downsampling factor)."""
    cfg = tok.config
    if stored.config_hash is not None and stored.config_hash != cfg.architecture_hash():
        raise ValueError(_hash_mismatch(stored, tok, source))
    if isinstance(stored.layout, dict):  # a hand-made or edited file may have a layout and no hash
        differ = layout_differences(stored.layout, cfg.token_layout())
        if differ:
            raise ValueError(f"{source}: its token layout disagrees with model {tok.name_or_path!r} in "
                             f"{'; '.join(differ)} (file vs model); decode with the model that encoded it"
                             + (f" (--model {stored.model})" if stored.model else ""))


def _hash_mismatch(stored: StoredTokens, tok, source: str | os.PathLike) -> str:
    """What differs between the model that wrote ``stored`` and ``tok``, and what to do about it."""
    recorded, given = stored.model, str(tok.name_or_path)
    message = (f"{source} was encoded by model {recorded!r} (config hash {stored.config_hash}), but the model "
               f"it is decoded with, {given!r}, has config hash {tok.config.architecture_hash()}")
    if recorded is not None and _same_model_name(recorded, given):
        return (f"{message}: {given!r} has changed since the file was written. Decode with the version of the "
                f"model that wrote it (config hash {stored.config_hash}), or re-encode the images with the current "
                f"{given!r}")
    written_by = _local_config(recorded)
    if written_by is not None and written_by.architecture_hash() == stored.config_hash:
        differ = _config_differences(written_by, tok.config)
        message += f". They differ in {'; '.join(differ)} (file's model vs this one)" if differ else ""
    elif isinstance(stored.layout, dict):
        differ = layout_differences(stored.layout, tok.config.token_layout())
        message += (f". Their token layouts differ in {'; '.join(differ)} (file vs this model)" if differ else
                     ". Their token layouts agree, but the networks differ, so the same ids decode to other images")
    if recorded is None:
        return f"{message}. Decode with the model that wrote it, or re-encode the images with {given!r}"
    return f"{message}. Decode with the model that wrote it (--model {recorded}), or re-encode the images with {given!r}"


def _same_model_name(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def _local_config(model: str | None):
    """The config of a model named in a token file, when it is on this machine (shipped, a folder, or in
    the Hub cache); never downloads. None when it cannot be found or read."""
    if not model:
        return None
    from ..config import CONFIG_NAME, VQCTConfig
    from ..model_files import resolve_model_dir

    try:
        return VQCTConfig.load(resolve_model_dir(model, local_files_only=True) / CONFIG_NAME)
    except (OSError, ValueError):
        return None


def _config_differences(a, b) -> list[str]:
    """Architecture fields (not provenance) that differ between two configs, as "field a vs b"."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{key} {da[key]!r} vs {db[key]!r}" for key in da if key != "extra" and da[key] != db[key]]


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "TOKEN_SUFFIXES", "StoredTokens", "check_same_model", "encoded_tokens",
           "npy_array", "parse_token_data", "read_token_file", "split_grids", "token_suffix", "write_token_file"]
