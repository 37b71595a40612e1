"""Tokenize a whole dataset into resumable shards (the folder format is in ``shards.py``).

    from vqct_tokenizer.tokens import encode_dataset
    encode_dataset("images/", "tokens/", tokenizer="vqct-open-f8")

The input list (a folder searched recursively in sorted order, or a list file) is cut into shards of
``shard_size`` consecutive images; shard i belongs to rank i % world_size. A shard's token file and
then its JSON are each written atomically, and the JSON marks the shard done, so a killed run
restarted with the same command skips finished shards and redoes only the interrupted ones. Batches
never cross a shard boundary, so an image is always encoded in the same batch and gets bit-identical
tokens however often the run is interrupted and on however many ranks.

Part of the slim package: torch, numpy, pillow and safetensors only (tqdm if present).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ImageError
from ..image_io import check_native_size, list_image_files, native_file_limit, read_image_file
from ..image_processor import ImageProcessor
from ..refinement import check_refine_steps
from ..runtime import progress_bar, resolve_device
from .shards import (FORMAT_NAME, FORMAT_VERSION, SETTINGS_NAME, read_json, shard_done, shard_name, shard_range,
                     write_json, write_manifest, write_shard_tokens)

#: Test hook: seconds to sleep after each written shard, so a test can kill the run between shards.
SHARD_SLEEP_ENV = "VQCT_ENCODE_SHARD_SLEEP"


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


# ---------------------------------------------------------------------------------------- image loading
@dataclass
class _Limits:
    """Pixel limits of one run: files above ``file_pixels`` are not read (None: PIL's limit), native
    images above ``native_pixels`` after padding to a multiple of ``factor`` are not encoded. ``cli``:
    failures name the --max-pixels flag rather than the Python argument."""

    file_pixels: int | None
    native_pixels: int | None
    factor: int
    hint: str = "pass encode_dataset(..., max_pixels=N)"
    cli: bool = False


class _ImageFiles(Dataset):
    """Loads and preprocesses one image per index; a bad file becomes an error record, not a crash.

    Returns what ``VQCTTokenizer.preprocess`` would make of the path, in [0, 1] (the tokenizer maps
    it to [-1, 1]): resized and cropped to ``resolution``, or at native size when it is None.
    """

    def __init__(self, root: Path, files: Sequence[str], resolution: int | None, resize_mode: str, resample: str,
                 limits: _Limits) -> None:
        self.root, self.files = root, files
        self.resolution = resolution
        self.processor = ImageProcessor(resolution, resize_mode, resample) if resolution is not None else None
        self.limits = limits

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lim = self.limits
        try:
            path = self.root / self.files[index]
            x = read_image_file(path, lim.file_pixels, lim.hint)
            size = (int(x.shape[1]), int(x.shape[2]))
            if self.resolution is not None:
                x = self.processor.resize(x)
            else:  # checked here, so one oversized image is a listed failure, not the end of the run
                check_native_size(size[0], size[1], lim.factor, lim.native_pixels, str(path))
            return {"index": index, "image": x, "size": size, "error": None}
        except Exception as e:  # noqa: BLE001 - any unreadable file is listed with its reason; the run goes on
            message = e.cli_message() if lim.cli and hasattr(e, "cli_message") else str(e)
            return {"index": index, "image": None, "size": None, "error": f"{type(e).__name__}: {message}"}


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
    local_rank: int | None = None  # set under torchrun: the GPU of this rank
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
                   progress: bool = True, max_pixels: int | None = None, refine_steps: int = 0,
                   _cli: bool = False) -> EncodeResult:
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
            ``max_native_pixels``, 4096*3072). Larger images are listed as failures.
        refine_steps: fit each image's tokens to the decoder (``VQCTTokenizer.encode``'s
            ``refine_steps``; 0 = the encoder's tokens). Images too large to refine (they decode
            in tiles) are listed as failures; must be the same when resuming.

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
    refine_steps = check_refine_steps(refine_steps)
    out = Path(out_dir)
    root, files = list_inputs(source)
    dist_info = _setup_distributed(str(device))
    try:
        tok = _load_tokenizer(tokenizer, resolve_device(device, dist_info.local_rank))
        cfg = tok.config
        if resolution is not None and (resolution < 1 or resolution % cfg.downsample_factor):
            raise ValueError(f"resolution {resolution} must be a positive multiple of the model's "
                             f"downsampling factor {cfg.downsample_factor}")
        size = None if native else (resolution or cfg.resolution)
        settings = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "model": str(tok.name_or_path), "config_hash": cfg.architecture_hash(), "weights_hash": _weights_hash(tok),
            "resolution": size, "native": bool(native), "resize_mode": cfg.resize_mode, "resample": cfg.resample,
            "shard_size": shard_size, "num_inputs": len(files), "inputs_hash": _inputs_hash(files),
            "source_root": str(root.resolve()),
            # fast paths may differ from fp32 in a few near-tied cells: one run, one path
            "precision": getattr(tok, "precision", "fp32"),
            "refine_steps": refine_steps,
        }
        _claim_out_dir(out, settings, dist_info)
        layout = cfg.token_layout(None if size is None else (size // cfg.downsample_factor,) * 2)
        num_shards = -(-len(files) // shard_size)
        mine = {i: shard_range(i, shard_size, len(files)) for i in range(num_shards) if i % dist_info.world == dist_info.rank}
        pending = [(i, r) for i, r in mine.items() if not shard_done(out, i, shard_size, len(files))]
        total = sum(map(len, mine.values()))
        bar = progress_bar(total, "encode-dataset", unit="img", enabled=progress and dist_info.rank == 0,
                           initial=total - sum(len(r) for _, r in pending))
        # max_pixels bounds reading and native encoding alike; without it files get PIL's limit, raised
        # at native size to the tokenizer's own limit when that is larger (as VQCTTokenizer.encode does)
        native_pixels = max_pixels if max_pixels is not None else tok.max_native_pixels
        file_pixels = max_pixels if max_pixels is not None or not native else native_file_limit(native_pixels)[0]
        limits = _Limits(file_pixels, native_pixels, cfg.downsample_factor, cli=_cli)
        images = _ImageFiles(root, files, size, cfg.resize_mode, cfg.resample, limits)
        try:
            written, encoded, failed = _encode_shards(tok, out, images, pending, batch_size, workers, layout,
                                                      settings, bar)
        finally:
            bar.close()
        dist_info.barrier()  # every rank's shards are on disk before the merge
        if dist_info.rank == 0:
            write_manifest(out, settings, layout, files, num_shards)
        dist_info.barrier()  # nobody returns before the manifest exists
        return EncodeResult(out, encoded, failed, written, len(mine) - len(pending))
    finally:
        dist_info.close()


def _load_tokenizer(tokenizer: Any, device: torch.device):
    from ..defaults import DEFAULT_MODEL
    from ..tokenizer import VQCTTokenizer

    if isinstance(tokenizer, VQCTTokenizer):
        return tokenizer.to(device)
    return VQCTTokenizer.from_pretrained(tokenizer if tokenizer is not None else DEFAULT_MODEL, device=device)


def _claim_out_dir(out: Path, settings: dict[str, Any], dist_info: _Dist) -> None:
    """Record the run's settings, or check that a rerun matches those of the run it continues."""
    if dist_info.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / SETTINGS_NAME).is_file():
            write_json(out / SETTINGS_NAME, settings)
        for stale in out.glob(".shard-*.tmp"):  # left by a killed write
            stale.unlink(missing_ok=True)
    dist_info.barrier()
    # every rank checks, so every rank stops with the same message on a mismatch
    _check_settings(out, read_json(out / SETTINGS_NAME), settings)


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
             "resample": "the config's resample", "shard_size": "--shard-size", "precision": "--precision",
             "refine_steps": "--refine"}
    # runs started before these were recorded used fp32 and no refinement
    old = {"precision": "fp32", "refine_steps": 0, **old}
    for key, flag in flags.items():
        if old.get(key) != new[key]:
            raise ValueError(f"{out} was started with {key}={old.get(key)!r}, this run has {new[key]!r}; "
                             f"rerun with the same {flag} (or use a new output folder)")
    if (old.get("num_inputs"), old.get("inputs_hash")) != (new["num_inputs"], new["inputs_hash"]):
        raise ValueError(f"the input list differs from the one {out} was started with ({old.get('num_inputs')} "
                         f"images then, {new['num_inputs']} now, or other names); use a new output folder")


def _encode_shards(tok, out: Path, images: _ImageFiles, shards: list[tuple[int, range]], batch_size: int,
                   workers: int, layout: dict[str, Any], settings: dict[str, Any], bar) -> tuple[int, int, int]:
    """Encode the pending shards in order, writing each as soon as its last batch is done.

    Memory stays bounded: one shard's token grids, plus the batches the workers prefetch.
    """
    written = encoded = failed = 0
    if not shards:
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
                                   max_native_pixels=images.limits.native_pixels,
                                   refine_steps=settings["refine_steps"]))
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
    if records:  # cannot happen while batches stay inside shards; never drop images silently
        raise RuntimeError(f"internal error: {len(records)} encoded images were not written to a shard")
    return written, encoded, failed


def _encode_batch(tok, batch: list[dict[str, Any]], native: bool, max_native_pixels: int | None,
                  refine_steps: int = 0) -> list[torch.Tensor]:
    """Token grids (on CPU) of the readable images of a batch, in batch order."""
    if refine_steps > 1:
        for r in batch:  # refinement scores whole-image decodes: an image that decodes in tiles is a failure
            if r["error"] is None:
                try:
                    tok.check_refinable([r["image"]])
                except ImageError as exc:
                    r["error"], r["image"] = str(exc), None
    images = [r["image"] for r in batch if r["error"] is None]
    for r in batch:
        r["image"] = None  # drop pixels as soon as they are encoded: memory stays one batch
    if not images:
        return []
    # resize=False: the worker already resized (or, at native size, the tokenizer pads); the math is
    # exactly that of tok.encode(path)
    if not native:  # the run's own --resolution: not subject to the native-size limit
        pixels = int(images[0].shape[1] * images[0].shape[2])
        tokens = tok.encode(torch.stack(images), resize=False, batch_size=len(images), max_native_pixels=pixels,
                            refine_steps=refine_steps)
        return list(tokens.cpu())
    # the workers already refused images over the limit (as listed failures); this is the same bound
    tokens = tok.encode(images, resize=False, batch_size=len(images), max_native_pixels=max_native_pixels,
                        refine_steps=refine_steps)
    return [t.cpu() for t in (tokens if isinstance(tokens, list) else tokens.unbind(0))]


def _write_shard(out: Path, index: int, records: list[dict[str, Any]], grids: list[torch.Tensor],
                 files: Sequence[str], layout: dict[str, Any], settings: dict[str, Any]) -> None:
    """Token file first, then the JSON that marks the shard done; both atomic."""
    name = shard_name(index)
    write_shard_tokens(out / f"{name}.safetensors", index, grids, layout)
    images, row = [], 0
    for r in records:
        entry: dict[str, Any] = {"index": r["index"], "path": files[r["index"]]}
        if r["error"] is None:
            entry.update(size=list(r["size"]), row=row)
            row += 1
        else:
            entry["error"] = r["error"]
        images.append(entry)
    write_json(out / f"{name}.json", {"shard": index, "config_hash": settings["config_hash"],
                                      "tokens_file": f"{name}.safetensors", "images": images})


__all__ = ["EncodeResult", "SHARD_SLEEP_ENV", "encode_dataset", "list_inputs"]
