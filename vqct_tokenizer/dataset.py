"""Tokenize a whole dataset into resumable shards, and read the result back.

    from vqct_tokenizer.dataset import encode_dataset, load_token_dataset
    encode_dataset("images/", "tokens/", tokenizer="vqct-open-f8")
    ds = load_token_dataset("tokens/")
    ds[0], ds["cat/001.jpg"], len(ds)            # LongTensor (h, w, k+1), like VQCTTokenizer.encode

Output folder::

    settings.json             what the run was started with (model, config hash, inputs, shard size);
                              a rerun must match it, so it can never mix two models' tokens
    shard-00000.safetensors   tokens of the images of shard 0 that could be read, in input order:
                              "tokens" (n, h, w, k+1), or at --native size "cells" (sum h_i*w_i, k+1)
                              plus "grid_shapes" (n, 2); int16 when the vocabulary fits, else int32
    shard-00000.json          per input of the shard: path, original size and row, or the error
    manifest.json             written last: layout, every image with its shard and row, failures

The input list (a folder searched recursively in sorted order, or a list file) is cut into shards of
``shard_size`` consecutive images; shard i belongs to rank i % world_size. A shard's token file and
then its JSON are each written atomically, and the JSON marks the shard done, so a killed run
restarted with the same command skips finished shards and redoes only the interrupted ones. Batches
never cross a shard boundary, so an image is always encoded in the same batch and gets bit-identical
tokens however often the run is interrupted and on however many ranks.

This module is part of the slim package: torch, numpy, pillow and safetensors only (tqdm if present).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .atomic import atomic_write
from .errors import TokenError
from .image_io import check_native_size, list_image_files, native_file_limit, read_image_file, resize_to

SETTINGS_NAME = "settings.json"
MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "vqct-token-dataset"
FORMAT_VERSION = 1
#: Test hook: seconds to sleep after each written shard, so a test can kill the run between shards.
SHARD_SLEEP_ENV = "VQCT_ENCODE_SHARD_SLEEP"


# ---------------------------------------------------------------------------------------- inputs
def list_inputs(source: str | os.PathLike) -> tuple[Path, list[str]]:
    """(root, relative paths) in the fixed order that defines the shards (see list_image_files)."""
    return list_image_files(source)


def _inputs_hash(files: Sequence[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:16]


def _weights_hash(tok) -> str:
    """Fingerprint of the loaded weights: the config hash alone cannot tell two trainings apart."""
    h = hashlib.sha256()
    for name, tensor in sorted(tok.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- layout
def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest signed integer type holding every id (signed: readable by torch everywhere)."""
    return np.dtype(np.int16) if vocab_size <= 2 ** 15 else np.dtype(np.int32)


def token_layout(config, grid: tuple[int, int] | None) -> dict[str, Any]:
    """What a (h, w, k+1) grid means: slot names, id range of each group, vocabulary size."""
    return {
        "axes": ["row", "column", "slot"],
        "groups": [{"name": g.name, "k": g.k, "id_range": [g.code_start, g.code_end]} for g in config.groups],
        "slots": [g.name for g in config.groups for _ in range(g.k)],
        "tokens_per_cell": config.tokens_per_cell,
        "vocab_size": config.codebook_size,
        "grid": list(grid) if grid is not None else None,  # None: native sizes, one grid per image
        "downsample_factor": config.downsample_factor,
        "dtype": token_dtype(config.codebook_size).name,
    }


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


# ---------------------------------------------------------------------------------------- json io
def _write_json(target: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")

    atomic_write(target, write)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from e


# ---------------------------------------------------------------------------------------- image loading
class _ImageFiles(Dataset):
    """Loads and preprocesses one image per index; a bad file becomes an error record, not a crash.

    Returns what ``VQCTTokenizer.preprocess`` would make of the path, in [0, 1] (the tokenizer maps
    it to [-1, 1]): resized and cropped to ``resolution``, or at native size when it is None.
    """

    def __init__(self, root: Path, files: Sequence[str], resolution: int | None, resize_mode: str, resample: str,
                 limits: "_Limits | None" = None) -> None:
        self.root, self.files = root, files
        self.resolution, self.resize_mode, self.resample = resolution, resize_mode, resample
        self.limits = limits or _Limits()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lim = self.limits
        try:
            path = self.root / self.files[index]
            x = read_image_file(path, lim.file_pixels, lim.hint)
            size = (int(x.shape[1]), int(x.shape[2]))
            if self.resolution is not None:
                x = resize_to(x, self.resolution, self.resize_mode, self.resample)
            else:  # checked here, so one oversized image is a listed failure, not the end of the run
                check_native_size(size[0], size[1], lim.factor, lim.native_pixels, str(path))
            return {"index": index, "image": x, "size": size, "error": None}
        except Exception as e:  # noqa: BLE001 - any unreadable file is listed with its reason; the run goes on
            message = e.cli_message() if lim.cli and hasattr(e, "cli_message") else str(e)
            return {"index": index, "image": None, "size": None, "error": f"{type(e).__name__}: {message}"}


@dataclass
class _Limits:
    """Pixel limits of one run: files above ``file_pixels`` are not read (None: PIL's limit), native
    images above ``native_pixels`` after padding to a multiple of ``factor`` are not encoded. ``cli``:
    failures name the --max-pixels flag rather than the Python argument."""

    file_pixels: int | None = None
    native_pixels: int | None = None
    factor: int = 1
    hint: str = "pass encode_dataset(..., max_pixels=N)"
    cli: bool = False


class _ShardBatches:
    """Batch sampler: the inputs of each pending shard in order, cut into batches inside the shard."""

    def __init__(self, shards: Sequence[range], batch_size: int) -> None:
        self.shards, self.batch_size = shards, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for shard in self.shards:
            for start in range(shard.start, shard.stop, self.batch_size):
                yield list(range(start, min(start + self.batch_size, shard.stop)))

    def __len__(self) -> int:
        return sum(-(-len(s) // self.batch_size) for s in self.shards)


def _as_list(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch  # images may differ in size (native, failures): the main process groups them


# ---------------------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created_group: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.created_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _setup_distributed(device: str) -> _Dist:
    """Join torchrun's process group when RANK is set (gloo on CPU, nccl on GPU); else one process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and not str(device).startswith("cpu") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)  # else every rank's barrier would run on GPU 0
        # ranks finish their shards at different times; the final barrier must outwait the slowest
        dist.init_process_group(backend=backend, timeout=timedelta(hours=24))
        created = True
    return _Dist(rank, world, local, created)


def _pick_device(device: str | torch.device | None, dist_info: _Dist) -> torch.device:
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info.local_rank) if dist_info.world > 1 else torch.device("cuda")
        return torch.device("cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------- encoding
@dataclass
class EncodeResult:
    """What this process did: shards it wrote now or found done, images of the shards it wrote.
    Totals over all ranks and runs are in manifest.json."""

    out_dir: Path
    encoded: int
    failed: int
    shards_written: int
    shards_skipped: int


def encode_dataset(source: str | os.PathLike, out_dir: str | os.PathLike, tokenizer: Any = None, *,
                   batch_size: int = 32, shard_size: int = 1024, resolution: int | None = None,
                   native: bool = False, device: str | torch.device | None = "auto", workers: int = 2,
                   progress: bool = True, max_pixels: int | None = None, _cli: bool = False) -> EncodeResult:
    """Tokenize every image of ``source`` into shards under ``out_dir``; resumable and torchrun-aware.

    Args:
        source: a folder (searched recursively) or a list file of image paths relative to its folder.
        out_dir: output folder; rerunning into it continues an interrupted run.
        tokenizer: a VQCTTokenizer, or a model folder / shipped name / Hub repo id
            (default: ``vqct_tokenizer.defaults.DEFAULT_MODEL``).
        batch_size: images per encoder batch (batches stay inside one shard).
        shard_size: images per shard file; must be the same when resuming.
        resolution: resize to this size instead of the config's ``resolution``.
        native: keep each image's own size (padded to a multiple of the downsampling factor).
        device: "auto" (cuda:LOCAL_RANK under torchrun when available), "cpu", "cuda:1", ...
        workers: DataLoader processes that decode images (0: in the main process).
        progress: show a tqdm progress bar (rank 0 only).
        max_pixels: the largest image file to read (default: PIL.Image.MAX_IMAGE_PIXELS) and, with
            ``native``, the largest to encode after padding (default: the tokenizer's
            ``max_native_pixels``, 2048*2048). Larger images are listed as failures.

    Under ``torchrun`` (RANK set) each rank encodes shards i with i % WORLD_SIZE == RANK and rank 0
    writes the manifest after a barrier. All ranks must see the same ``out_dir`` (a shared file system
    across nodes). A given tokenizer object is moved to ``device``.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if native and resolution is not None:
        raise ValueError("--resolution and --native exclude each other")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    out = Path(out_dir)
    root, files = list_inputs(source)
    dist_info = _setup_distributed(str(device))
    try:
        tok = _load_tokenizer(tokenizer, _pick_device(device, dist_info))
        cfg = tok.config
        if resolution is not None and (resolution < 1 or resolution % cfg.downsample_factor):
            raise ValueError(f"resolution {resolution} must be a positive multiple of the model's "
                             f"downsampling factor {cfg.downsample_factor}")
        size = None if native else (resolution or cfg.resolution)
        grid = None if size is None else (size // cfg.downsample_factor,) * 2
        settings = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "model": str(tok.name_or_path), "config_hash": cfg.architecture_hash(), "weights_hash": _weights_hash(tok),
            "resolution": size, "native": bool(native), "resize_mode": cfg.resize_mode, "resample": cfg.resample,
            "shard_size": shard_size, "num_inputs": len(files), "inputs_hash": _inputs_hash(files),
            "source_root": str(root.resolve()),
            # fast paths may differ from fp32 in a few near-tied cells: one run, one path
            "precision": getattr(tok, "precision", "fp32"),
        }
        _claim_out_dir(out, settings, dist_info)
        layout = token_layout(cfg, grid)
        num_shards = -(-len(files) // shard_size)
        mine = {i: _shard_range(i, shard_size, len(files)) for i in range(num_shards) if i % dist_info.world == dist_info.rank}
        pending = [(i, r) for i, r in mine.items() if not _shard_done(out, i, shard_size, len(files))]
        bar = _progress(total=sum(map(len, mine.values())),
                        done=sum(map(len, mine.values())) - sum(len(r) for _, r in pending),
                        enabled=progress and dist_info.rank == 0)
        # max_pixels bounds reading and native encoding alike; without it files get PIL's limit, raised
        # at native size to the tokenizer's own limit when that is larger (as VQCTTokenizer.encode does)
        native_pixels = max_pixels if max_pixels is not None else tok.max_native_pixels
        file_pixels = max_pixels if max_pixels is not None or not native else native_file_limit(native_pixels)[0]
        limits = _Limits(file_pixels, native_pixels, cfg.downsample_factor, cli=_cli)
        images = _ImageFiles(root, files, size, cfg.resize_mode, cfg.resample, limits)
        written, encoded, failed = _encode_shards(tok, out, images, pending, batch_size, workers, layout, settings, bar)
        dist_info.barrier()  # every rank's shards are on disk before the merge
        if dist_info.rank == 0:
            write_manifest(out, settings, layout, files, num_shards)
        dist_info.barrier()  # nobody returns before the manifest exists
        return EncodeResult(out, encoded, failed, written, len(mine) - len(pending))
    finally:
        dist_info.close()


def _load_tokenizer(tokenizer: Any, device: torch.device):
    from .defaults import DEFAULT_MODEL
    from .tokenizer import VQCTTokenizer

    if isinstance(tokenizer, VQCTTokenizer):
        return tokenizer.to(device)
    return VQCTTokenizer.from_pretrained(tokenizer if tokenizer is not None else DEFAULT_MODEL, device=device)


def _claim_out_dir(out: Path, settings: dict[str, Any], dist_info: _Dist) -> None:
    """Record the run's settings, or check that a rerun matches those of the run it continues."""
    if dist_info.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / SETTINGS_NAME).is_file():
            _write_json(out / SETTINGS_NAME, settings)
        for stale in out.glob(".shard-*.tmp"):  # left by a killed write
            stale.unlink(missing_ok=True)
    dist_info.barrier()
    # every rank checks, so every rank stops with the same message on a mismatch
    _check_settings(out, _read_json(out / SETTINGS_NAME), settings)


def _check_settings(out: Path, old: Any, new: dict[str, Any]) -> None:
    if not isinstance(old, dict) or old.get("format") != FORMAT_NAME:
        raise ValueError(f"{out / SETTINGS_NAME} is not a vqct encode-dataset settings file; use an empty output folder")
    if old.get("config_hash") != new["config_hash"]:
        raise ValueError(f"{out} holds tokens of model {old.get('model')!r} (config hash {old.get('config_hash')}), "
                         f"but this run uses {new['model']!r} (config hash {new['config_hash']}); "
                         "use a new output folder or the same model")
    if old.get("weights_hash") != new["weights_hash"]:
        raise ValueError(f"{out} holds tokens of model {old.get('model')!r} with other weights (weights hash "
                         f"{old.get('weights_hash')} vs {new['weights_hash']}); use a new output folder or the same model")
    flags = {"native": "--native", "resolution": "--resolution", "resize_mode": "the config's resize_mode",
             "resample": "the config's resample", "shard_size": "--shard-size", "precision": "--precision"}
    old = {"precision": "fp32", **old}  # runs started before precision was recorded used fp32
    for key, flag in flags.items():
        if old.get(key) != new[key]:
            raise ValueError(f"{out} was started with {key}={old.get(key)!r}, this run has {new[key]!r}; "
                             f"rerun with the same {flag} (or use a new output folder)")
    if (old.get("num_inputs"), old.get("inputs_hash")) != (new["num_inputs"], new["inputs_hash"]):
        raise ValueError(f"the input list differs from the one {out} was started with ({old.get('num_inputs')} "
                         f"images then, {new['num_inputs']} now, or other names); use a new output folder")


def _shard_range(index: int, shard_size: int, total: int) -> range:
    return range(index * shard_size, min((index + 1) * shard_size, total))


def _shard_done(out: Path, index: int, shard_size: int, total: int) -> bool:
    """A shard is done when its JSON (written last) describes exactly its inputs and its tokens exist."""
    meta_path = out / f"{shard_name(index)}.json"
    if not meta_path.is_file() or not (out / f"{shard_name(index)}.safetensors").is_file():
        return False
    try:
        meta = _read_json(meta_path)
    except ValueError:
        return False
    expected = _shard_range(index, shard_size, total)
    return isinstance(meta, dict) and meta.get("shard") == index and \
        [e.get("index") for e in meta.get("images", [])] == list(expected)


def _encode_shards(tok, out: Path, images: _ImageFiles, shards: list[tuple[int, range]], batch_size: int,
                   workers: int, layout: dict[str, Any], settings: dict[str, Any], bar) -> tuple[int, int, int]:
    """Encode the pending shards in order, writing each as soon as its last batch is done.

    Memory stays bounded: one shard's token grids, plus the batches the workers prefetch.
    """
    written = encoded = failed = 0
    if not shards:
        bar.close()
        return written, encoded, failed
    loader = DataLoader(images, batch_sampler=_ShardBatches([r for _, r in shards], batch_size),
                        num_workers=workers, collate_fn=_as_list, prefetch_factor=2 if workers else None)
    sleep = float(os.environ.get(SHARD_SLEEP_ENV, "0") or 0)
    remaining = iter(shards)
    current, current_range = next(remaining)
    records: list[dict[str, Any]] = []
    grids: list[torch.Tensor] = []
    for batch in loader:
        grids.extend(_encode_batch(tok, batch, native=layout["grid"] is None,
                                   max_native_pixels=images.limits.native_pixels))
        records.extend(batch)
        bar.update(len(batch))
        if records[-1]["index"] == current_range.stop - 1:  # the shard's last batch
            _write_shard(out, current, records, grids, images.files, layout, settings)
            ok = len(grids)
            encoded, failed, written = encoded + ok, failed + len(records) - ok, written + 1
            records, grids = [], []
            current, current_range = next(remaining, (None, range(0)))
            if sleep:
                time.sleep(sleep)
    bar.close()
    if records:  # cannot happen while batches stay inside shards; never drop images silently
        raise RuntimeError(f"internal error: {len(records)} encoded images were not written to a shard")
    return written, encoded, failed


def _encode_batch(tok, batch: list[dict[str, Any]], native: bool,
                  max_native_pixels: int | None = None) -> list[torch.Tensor]:
    """Token grids (on CPU) of the readable images of a batch, in batch order."""
    images = [r["image"] for r in batch if r["error"] is None]
    for r in batch:
        r["image"] = None  # drop pixels as soon as they are encoded: memory stays one batch
    if not images:
        return []
    # resize=False: the worker already resized (or, at native size, the tokenizer pads); the math is
    # exactly that of tok.encode(path)
    if not native:  # the run's own --resolution: not subject to the native-size limit
        pixels = int(images[0].shape[1] * images[0].shape[2])
        tokens = tok.encode(torch.stack(images), resize=False, batch_size=len(images), max_native_pixels=pixels)
        return list(tokens.cpu())
    # the workers already refused images over the limit (as listed failures); this is the same bound
    tokens = tok.encode(images, resize=False, batch_size=len(images), max_native_pixels=max_native_pixels)
    return [t.cpu() for t in (tokens if isinstance(tokens, list) else tokens.unbind(0))]


def _write_shard(out: Path, index: int, records: list[dict[str, Any]], grids: list[torch.Tensor],
                 files: Sequence[str], layout: dict[str, Any], settings: dict[str, Any]) -> None:
    """Token file first, then the JSON that marks the shard done; both atomic."""
    from safetensors.numpy import save_file

    dtype, k1 = np.dtype(layout["dtype"]), layout["tokens_per_cell"]
    arrays = [g.numpy().astype(dtype) for g in grids]
    if layout["grid"] is None:  # native sizes: grids of different shapes, flattened into one cell list
        tensors = {"cells": np.concatenate([a.reshape(-1, k1) for a in arrays]) if arrays else np.zeros((0, k1), dtype),
                   "grid_shapes": np.array([a.shape[:2] for a in arrays], dtype=np.int32).reshape(-1, 2)}
    else:
        tensors = {"tokens": np.stack(arrays) if arrays else np.zeros((0, *layout["grid"], k1), dtype)}
    name = shard_name(index)
    atomic_write(out / f"{name}.safetensors",
                  lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT_NAME, "shard": str(index)}))
    images, row = [], 0
    for r in records:
        entry: dict[str, Any] = {"index": r["index"], "path": files[r["index"]]}
        if r["error"] is None:
            entry.update(size=list(r["size"]), row=row)
            row += 1
        else:
            entry["error"] = r["error"]
        images.append(entry)
    _write_json(out / f"{name}.json", {"shard": index, "config_hash": settings["config_hash"],
                                       "tokens_file": f"{name}.safetensors", "images": images})


def _progress(total: int, done: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional on the slim install
        return _NoBar()
    return tqdm(total=total, initial=done, disable=not enabled, desc="encode-dataset", unit="img",
                dynamic_ncols=True, file=sys.stderr)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------- manifest
def write_manifest(out: Path, settings: dict[str, Any], layout: dict[str, Any], files: list[str], num_shards: int) -> dict[str, Any]:
    """Merge every shard's JSON into manifest.json; an unfinished shard is an error (rerun to finish)."""
    images, failures = [], []
    for i in range(num_shards):
        if not _shard_done(out, i, settings["shard_size"], len(files)):
            raise RuntimeError(f"{out / shard_name(i)} is missing or incomplete; rerun the same command to finish it")
        for entry in _read_json(out / f"{shard_name(i)}.json")["images"]:
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
        "layout": layout,
        "counts": {"inputs": len(files), "encoded": len(images), "failed": len(failures), "shards": num_shards},
        "shards": [f"{shard_name(i)}.safetensors" for i in range(num_shards)],
        "images": images,
        "failures": failures,
    }
    _write_json(out / MANIFEST_NAME, manifest)
    return manifest


# ---------------------------------------------------------------------------------------- reading
class TokenDataset:
    """The output of ``encode_dataset``: token grids of the encoded images, in input order.

    ``ds[i]`` (an int) or ``ds[path]`` (a source path as listed in the manifest, or that path
    resolved against the source folder) gives a LongTensor (h, w, k+1), the same as
    ``VQCTTokenizer.encode(path)``. ``len(ds)`` counts encoded images; unreadable inputs are in
    ``ds.failures``. Shards are read one at a time (the last one is cached) and checked as they are
    read: a token file of the wrong dtype, rank, shape or id range raises TokenError (a ValueError).
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        path = self.out_dir / MANIFEST_NAME
        if not path.is_file():
            hint = " (the run has not finished: rerun encode-dataset to complete it)" if (self.out_dir / SETTINGS_NAME).is_file() else ""
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {self.out_dir}{hint}")
        manifest = _read_json(path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a {FORMAT_NAME} manifest")
        version = manifest.get("version", FORMAT_VERSION)
        if not _is_int(version) or version > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {version!r}; upgrade vqct-tokenizer to read it")
        _check_manifest(manifest, path)
        self.manifest = manifest
        self.layout: dict[str, Any] = manifest["layout"]
        self.model: str = manifest["model"]
        self.config_hash: str = manifest["config_hash"]
        self.images: list[dict[str, Any]] = manifest["images"]
        self.failures: list[dict[str, Any]] = manifest["failures"]
        self.source_root = Path(manifest["source_root"])
        self._by_path: dict[str, int] = {}
        for i, entry in enumerate(self.images):
            self._by_path.setdefault(entry["path"], i)  # a path listed twice: the first occurrence
        for name in manifest["shards"]:
            if not (self.out_dir / name).is_file():
                raise FileNotFoundError(f"{self.out_dir / name} listed in the manifest is missing; rerun the same "
                                        "encode-dataset command into this folder to encode that shard again")
        self._rows = Counter(entry["shard"] for entry in self.images)  # encoded images per shard
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | str | os.PathLike) -> torch.Tensor:
        return self._grid(self.index_of(key) if isinstance(key, (str, os.PathLike)) else self._check_index(key))

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self._grid(i)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(source path, tokens) for every encoded image, in input order."""
        for i in range(len(self)):
            yield self.images[i]["path"], self._grid(i)

    @property
    def paths(self) -> list[str]:
        return [e["path"] for e in self.images]

    def image_size(self, key: int | str | os.PathLike) -> tuple[int, int]:
        """Original (H, W) of an image: pass it to ``decode(image_size=...)`` for --native tokens."""
        i = self.index_of(key) if isinstance(key, (str, os.PathLike)) else self._check_index(key)
        h, w = self.images[i]["size"]
        return int(h), int(w)

    def index_of(self, path: str | os.PathLike) -> int:
        key = Path(path).as_posix()
        if key in self._by_path:
            return self._by_path[key]
        try:  # an absolute (or cwd-relative) path to a file under the source folder
            rel = Path(path).resolve().relative_to(self.source_root.resolve()).as_posix()
        except ValueError:
            rel = None
        if rel is not None and rel in self._by_path:
            return self._by_path[rel]
        failed = next((f for f in self.failures if f["path"] in (key, rel)), None)
        if failed is not None:
            raise KeyError(f"{path} could not be encoded: {failed['error']}")
        raise KeyError(f"{path} is not in {self.out_dir / MANIFEST_NAME}")

    def validate(self) -> None:
        """Read and check every shard (one at a time) instead of on first use."""
        for i in range(len(self.manifest["shards"])):
            self._shard(i)

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.out_dir)!r}, images={len(self)}, failed={len(self.failures)}, model={self.model!r})"

    # ------------------------------------------------------------------ internals
    def _check_index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an int or a source path, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        return int(i) % n

    def _grid(self, i: int) -> torch.Tensor:
        entry = self.images[i]
        data = self._shard(entry["shard"])
        row = entry["row"]
        if "tokens" in data:
            if not 0 <= row < data["tokens"].shape[0]:
                raise TokenError(f"{self._shard_file(entry['shard'])} has no row {row} (image {entry['path']})")
            grid = data["tokens"][row]
        else:
            offsets = data["offsets"]
            if not 0 <= row < len(offsets) - 1:
                raise TokenError(f"{self._shard_file(entry['shard'])} has no grid {row} (image {entry['path']})")
            h, w = data["grid_shapes"][row]
            grid = data["cells"][offsets[row]:offsets[row + 1]].reshape(int(h), int(w), -1)
        return torch.from_numpy(grid.astype(np.int64))

    def _shard_file(self, shard: int) -> Path:
        return self.out_dir / self.manifest["shards"][shard]

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if self._cache is not None and self._cache[0] == shard:
            return self._cache[1]
        path = self._shard_file(shard)
        data = _read_shard(path, self.layout, self._rows[shard])
        self._cache = (shard, data)
        return data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_manifest(manifest: dict[str, Any], path: Path) -> None:
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
    layout = manifest["layout"]
    grid = layout.get("grid")
    if not _is_int(layout.get("tokens_per_cell")) or layout["tokens_per_cell"] < 1:
        raise bad("layout.tokens_per_cell must be a positive integer")
    if grid is not None and not (isinstance(grid, list) and len(grid) == 2 and all(_is_int(g) and g > 0 for g in grid)):
        raise bad(f"layout.grid must be null or [rows, columns], got {grid!r}")
    groups = layout.get("groups")
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and isinstance(g.get("name"), str) and _is_int(g.get("k")) and g["k"] > 0
            and isinstance(g.get("id_range"), list) and len(g["id_range"]) == 2 and all(map(_is_int, g["id_range"]))
            for g in groups):
        raise bad("layout.groups must be a list of {name, k, id_range}")
    if sum(g["k"] for g in groups) != layout["tokens_per_cell"]:
        raise bad("layout.groups do not add up to tokens_per_cell")
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


def _read_shard(path: Path, layout: dict[str, Any], rows: int) -> dict[str, np.ndarray]:
    """Load one shard file and check it against the manifest's layout; TokenError if it does not fit."""
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
    shape = (rows, *layout["grid"], k1) if not native else None
    if native:
        shapes = data["grid_shapes"]
        if shapes.ndim != 2 or shapes.shape != (rows, 2) or shapes.dtype.kind not in "iu" or (shapes < 1).any():
            raise TokenError(f"{path}: grid_shapes must be ({rows}, 2) positive integers, got {shapes.dtype} {shapes.shape}")
        cells = int(np.prod(shapes, axis=1).sum())
        if tokens.ndim != 2 or tokens.shape != (cells, k1):
            raise TokenError(f"{path}: cells must have shape ({cells}, {k1}), got {tokens.shape}")
        data["offsets"] = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))]).astype(np.int64)
    elif tokens.ndim != 4 or tokens.shape != shape:
        raise TokenError(f"{path}: tokens must have shape {shape} (images, rows, columns, slots), got {tokens.shape}")
    col = 0
    for group in layout["groups"]:
        part = tokens[..., col:col + group["k"]]
        lo, hi = group["id_range"]
        if part.size and (part.min() < lo or part.max() >= hi):
            bad = part.min() if part.min() < lo else part.max()
            raise TokenError(f"{path}: token id {bad} out of range for {group['name']} slots "
                             f"(columns {col}..{col + group['k'] - 1}): valid ids are [{lo}, {hi})")
        col += group["k"]
    return data


def load_token_dataset(out_dir: str | os.PathLike) -> TokenDataset:
    """Open the output folder of ``vqct encode-dataset`` / ``encode_dataset``."""
    return TokenDataset(out_dir)


__all__ = ["EncodeResult", "TokenDataset", "encode_dataset", "list_inputs", "load_token_dataset", "token_layout"]
