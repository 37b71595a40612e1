"""The folder that ``encode_dataset`` writes and ``load_token_dataset`` reads: names, JSON files,
shard tensors, and the checks on all of them.

    settings.json             what the run was started with (model, config hash, inputs, shard size);
                              a rerun must match it, so it can never mix two models' tokens
    shard-00000.safetensors   tokens of the images of shard 0 that could be read, in input order:
                              "tokens" (n, h, w, k+1), or at native size "cells" (sum h_i*w_i, k+1)
                              plus "grid_shapes" (n, 2); int16 when the vocabulary fits, else int32
    shard-00000.json          per input of the shard: path, original size and row, or the error
    manifest.json             written last: layout (VQCTConfig.token_layout), every image with its
                              shard and row, failures

Manifests written before the layout was shared also hold ``layout.dtype``; it is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import TokenError
from .layout import check_ids, check_layout, token_dtype

SETTINGS_NAME = "settings.json"
MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "vqct-token-dataset"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def shard_range(index: int, shard_size: int, total: int) -> range:
    return range(index * shard_size, min((index + 1) * shard_size, total))


def write_json(target: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    atomic_write(target, write)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e


def shard_done(out: Path, index: int, shard_size: int, total: int) -> bool:
    """A shard is done when its JSON (written last) describes exactly its inputs and its tokens exist."""
    meta_path = out / f"{shard_name(index)}.json"
    if not meta_path.is_file() or not (out / f"{shard_name(index)}.safetensors").is_file():
        return False
    try:
        meta = read_json(meta_path)
    except ValueError:
        return False
    expected = shard_range(index, shard_size, total)
    return isinstance(meta, dict) and meta.get("shard") == index and \
        [e.get("index") for e in meta.get("images", [])] == list(expected)


# ---------------------------------------------------------------------------------------- shard tensors
def write_shard_tokens(path: Path, index: int, grids: Sequence[torch.Tensor], layout: dict[str, Any]) -> None:
    """One shard's token grids, in the smallest integer type of the vocabulary; atomic."""
    from safetensors.numpy import save_file

    dtype, k1 = token_dtype(layout["vocab_size"]), layout["tokens_per_cell"]
    arrays = [g.numpy().astype(dtype) for g in grids]
    if layout["grid"] is None:  # native sizes: grids of different shapes, flattened into one cell list
        tensors = {"cells": np.concatenate([a.reshape(-1, k1) for a in arrays]) if arrays else np.zeros((0, k1), dtype),
                   "grid_shapes": np.array([a.shape[:2] for a in arrays], dtype=np.int32).reshape(-1, 2)}
    else:
        tensors = {"tokens": np.stack(arrays) if arrays else np.zeros((0, *layout["grid"], k1), dtype)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT_NAME, "shard": str(index)}))


def read_shard_tokens(path: Path, layout: dict[str, Any], rows: int) -> dict[str, np.ndarray]:
    """Load one shard file and check it against the manifest's layout; TokenError if it does not fit.

    Native-size shards get an extra "offsets" entry: grid i is cells[offsets[i]:offsets[i + 1]].
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise TokenError(f"{path} is not a readable safetensors shard ({e})") from e
    k1 = layout["tokens_per_cell"]
    native = layout["grid"] is None
    expected_keys = {"cells", "grid_shapes"} if native else {"tokens"}
    if set(data) != expected_keys:
        raise TokenError(f"{path} holds tensors {sorted(data)}, expected {sorted(expected_keys)}")
    tokens = data["cells"] if native else data["tokens"]
    if tokens.dtype.kind not in "iu":
        raise TokenError(f"{path}: tokens must be integers, got dtype {tokens.dtype}")
    if native:
        shapes = data["grid_shapes"]
        if shapes.ndim != 2 or shapes.shape != (rows, 2) or shapes.dtype.kind not in "iu" or (shapes < 1).any():
            raise TokenError(f"{path}: grid_shapes must be ({rows}, 2) positive integers, got {shapes.dtype} {shapes.shape}")
        cells = int(np.prod(shapes, axis=1).sum())
        if tokens.ndim != 2 or tokens.shape != (cells, k1):
            raise TokenError(f"{path}: cells must have shape ({cells}, {k1}), got {tokens.shape}")
        data["offsets"] = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))]).astype(np.int64)
    elif tokens.ndim != 4 or tokens.shape != (rows, *layout["grid"], k1):
        raise TokenError(f"{path}: tokens must have shape {(rows, *layout['grid'], k1)} (images, rows, columns, slots), "
                         f"got {tokens.shape}")
    check_ids(tokens, layout, str(path))
    return data


# ---------------------------------------------------------------------------------------- manifest
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Check every name, index and size the reader will use, so a hostile or damaged manifest is a
    clear ValueError here, not a read outside the folder or a silently wrong shard later.

    Shard names must be plain file names (no folders, "..", or absolute paths: they are joined to
    the output folder), and an image's shard must be an index into them: a negative one would wrap
    around to another shard in Python.
    """
    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: {what}; the manifest is damaged (rerun encode-dataset into a new folder)")

    for key, kind in (("layout", dict), ("shards", list), ("images", list), ("failures", list),
                      ("model", str), ("config_hash", str), ("source_root", str)):
        if not isinstance(manifest.get(key), kind):
            raise bad(f"'{key}' must be a {kind.__name__}")
    shards = manifest["shards"]
    for name in shards:
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "/" in name \
                or "\\" in name or "\0" in name or Path(name).is_absolute():
            raise bad(f"shard name {name!r} is not a plain file name inside the output folder")
    try:
        check_layout(manifest["layout"])
    except ValueError as e:
        raise bad(str(e)) from e
    for i, entry in enumerate(manifest["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise bad(f"images[{i}] must have a string 'path'")
        shard, row, size = entry.get("shard"), entry.get("row"), entry.get("size")
        if not _is_int(shard) or not 0 <= shard < len(shards):
            raise bad(f"images[{i}] ({entry['path']}) has shard {shard!r}, not an index into the "
                      f"{len(shards)} shard(s)")
        if not _is_int(row) or row < 0:
            raise bad(f"images[{i}] ({entry['path']}) has row {row!r}, not an integer >= 0")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
            raise bad(f"images[{i}] ({entry['path']}) has size {size!r}, not [H, W]")
    for i, entry in enumerate(manifest["failures"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise bad(f"failures[{i}] must have a string 'path'")


def write_manifest(out: Path, settings: dict[str, Any], layout: dict[str, Any], files: Sequence[str],
                   num_shards: int) -> dict[str, Any]:
    """Merge every shard's JSON into manifest.json; an unfinished shard is an error (rerun to finish)."""
    images, failures = [], []
    for i in range(num_shards):
        if not shard_done(out, i, settings["shard_size"], len(files)):
            raise RuntimeError(f"{out / shard_name(i)} is missing or incomplete; rerun the same command to finish it")
        for entry in read_json(out / f"{shard_name(i)}.json")["images"]:
            if "error" in entry:
                failures.append({"index": entry["index"], "path": entry["path"], "error": entry["error"]})
            else:
                images.append({"index": entry["index"], "path": entry["path"], "size": entry["size"],
                               "shard": i, "row": entry["row"]})
    manifest = {
        "format": FORMAT_NAME, "version": FORMAT_VERSION,
        "model": settings["model"], "config_hash": settings["config_hash"], "weights_hash": settings["weights_hash"],
        "resolution": settings["resolution"], "native": settings["native"],
        "source_root": settings["source_root"], "shard_size": settings["shard_size"],
        # how the tokens were made: the encoder path and encode-time refinement
        "precision": settings.get("precision", "fp32"), "refine_steps": settings.get("refine_steps", 0),
        "layout": layout,
        "counts": {"inputs": len(files), "encoded": len(images), "failed": len(failures), "shards": num_shards},
        "shards": [f"{shard_name(i)}.safetensors" for i in range(num_shards)],
        "images": images,
        "failures": failures,
    }
    write_json(out / MANIFEST_NAME, manifest)
    return manifest
