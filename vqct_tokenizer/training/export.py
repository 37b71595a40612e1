"""Training checkpoint -> slim tokenizer: the codebook is computed once, in eval mode, and frozen;
config.json gets the training preprocessing (resize mode from ``data.crop``, resampling)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..image_processor import resize_mode_for_crop
from ..model_files import read_weights, save_sharded, weights_file
from ..tokenizer import VQCTTokenizer
from .checkpoint import find_latest, load_checkpoint
from .config import complete_config, validate
from .data import TRAIN_RESAMPLE
from .model import VQCTTrainModel, build_model


def model_from_checkpoint(path: str | Path) -> VQCTTrainModel:
    path = Path(path)
    return _model_from_state(load_checkpoint(path), path)


def _model_from_state(state: dict[str, Any], path: Path) -> VQCTTrainModel:
    cfg = complete_config(state["config"])  # a checkpoint from an older version lacks newer (off) options
    validate(cfg)
    kept_prior = (path if path.is_dir() else path.parent) / "prior"
    model = build_model(cfg, prior_dir=kept_prior if kept_prior.is_dir() else None)
    # a run with optim.ema_decay exports its moving average of the weights, the better model
    model.load_state_dict(state["model_ema"]["shadow"] if "model_ema" in state else state["model"])
    return model.eval()


def tokenizer_from_model(model: VQCTTrainModel) -> VQCTTokenizer:
    model = model.eval()
    tok = VQCTTokenizer(model.config, model.vocab)
    tok.model.load_state_dict(model.autoencoder.state_dict())
    with torch.no_grad():
        # whatever the source is (transfer network in eval mode, learned / EMA codes, SimVQ's C @ W),
        # its output now is the frozen codebook; unit rows under the cosine lookup
        tok.codebook.copy_(model.codebook().float())
    return tok


def training_preprocessing(train_cfg: dict[str, Any]) -> dict[str, str]:
    """The config.json preprocessing fields that reproduce the training images: ``resize_mode``
    from ``data.crop`` without its randomness, and the resampling training used (ImageDataset's)."""
    crop = complete_config(train_cfg)["data"]["crop"]
    return {"resize_mode": resize_mode_for_crop(crop), "resample": TRAIN_RESAMPLE}


def tokenizer_from_checkpoint(path: str | Path, resolution: int | None = None) -> VQCTTokenizer:
    """A checkpoint file (or a run folder: its latest checkpoint) as a ready-to-use tokenizer.

    Its config.json carries the training preprocessing (``training_preprocessing``), so ``encode``
    prepares an image exactly as training did (without the random crop and flip).
    ``resolution`` sets the exported model's working resolution (what ``encode`` resizes to by
    default). Only a model without attention resolutions may change it: their placement depends on it.
    """
    path = Path(path)
    state_path = path if path.is_file() else find_latest(path)
    return _export_tokenizer(load_checkpoint(path), path, state_path, resolution)


def _export_tokenizer(state: dict[str, Any], path: Path, state_path: Path | None, resolution: int | None) -> VQCTTokenizer:
    tok = tokenizer_from_model(_model_from_state(state, path))
    provenance = checkpoint_provenance(state_path, state) if state_path is not None else {}
    changes: dict[str, Any] = training_preprocessing(state["config"])
    if resolution is not None and resolution != tok.config.resolution:
        if tok.config.attn_resolutions:
            raise ValueError(f"cannot export at resolution {resolution}: the model places attention at "
                             f"{list(tok.config.attn_resolutions)}, which depends on the resolution it was trained at")
        provenance["trained_resolution"] = tok.config.resolution
        changes["resolution"] = resolution
    config = dataclasses.replace(tok.config, **changes)  # validates the new values
    exported = VQCTTokenizer(config, tok.vocab)
    exported.load_state_dict(tok.state_dict())
    exported.config.extra = {**exported.config.extra, "provenance": provenance}
    exported.name_or_path = str(path)
    return exported


def checkpoint_provenance(ckpt: Path, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where an exported model came from: step, images seen, wall time, the training crop, and hashes
    of the training config, the data list and the prior, so a model card never rests on a run folder
    that is not shipped. ``state``: the checkpoint, if already loaded."""
    state = load_checkpoint(ckpt) if state is None else state
    cfg, run = state["config"], ckpt.parent
    step = int(state["step"])
    out: dict[str, Any] = {
        "checkpoint": ckpt.name, "step": step, "images_seen": step * int(cfg["optim"]["batch_size"]),
        "config_sha256": _sha256(json.dumps(cfg, sort_keys=True).encode()),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data_crop": complete_config(cfg)["data"]["crop"],
    }
    data = cfg.get("data", {}).get("train")
    if data and Path(data).is_file():
        out["data_list"] = Path(data).name
        out["data_list_sha256"] = _sha256(Path(data).read_bytes())
    prior = run / "prior" / "prior.json"
    if prior.is_file():
        out["prior_sha256"] = _sha256(prior.read_bytes() + (run / "prior" / "embeddings.safetensors").read_bytes())
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        out["train_wall_seconds"] = round(_wall_seconds(metrics, step, cfg), 3)
    return out


def _wall_seconds(metrics: Path, step: int, cfg: dict[str, Any]) -> float:
    """Training wall time up to ``step``: each logged window covers log_every steps at its img/s."""
    per_window = int(cfg["run"]["log_every"]) * int(cfg["optim"]["batch_size"])
    total = 0.0
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", 0) <= step and row.get("img_per_s"):
            total += per_window / row["img_per_s"]
    return total


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export(checkpoint: str | Path, out_dir: str | Path, resolution: int | None = None, *,
           dtype: torch.dtype | None = None, max_shard_bytes: int | None = None,
           keep_float32: tuple[str, ...] = ()) -> Path:
    """``vqct export``: storage options as ``VQCTTokenizer.save_pretrained`` takes them."""
    tok = tokenizer_from_checkpoint(checkpoint, resolution)
    tok.save_pretrained(out_dir, dtype=dtype, max_shard_bytes=max_shard_bytes, keep_float32=keep_float32)
    return Path(out_dir)


# ---------------------------------------------------------------------------------------- half-size
#: What a device call brings back (see benchmarks/gpu_job.py): at most 16 MiB a file; 15 leaves room.
DEVICE_SHARD_BYTES = 15 * 2**20
TRAIN_STATE = "train-state"
#: The checkpoint entries a warm start needs, in the order they are stored; "ema" (an exponential
#: moving average of "model", same keys) is exported when a checkpoint has it.
TRAIN_STATE_PARTS = ("model", "ema", "discriminator")


def export_half(checkpoint: str | Path, out_dir: str | Path, *, dtype: torch.dtype = torch.float16,
                max_shard_bytes: int | None = DEVICE_SHARD_BYTES, keep_float32: tuple[str, ...] = (),
                resolution: int | None = None, train_state: bool = True) -> dict[str, list[Path]]:
    """A checkpoint as half-precision safetensors shards, for bringing weights back from a machine
    that allows only small files.

    ``out_dir/tokenizer``: the slim tokenizer (``save_pretrained(dtype=..., max_shard_bytes=...,
    keep_float32=...)``; the codebook always stays float32), made from the checkpoint's "ema" weights
    when it has them. ``out_dir/train-state``: with ``train_state``, the checkpoint's model (transfer
    network included, which the tokenizer no longer has), its EMA if any, and discriminator, as one
    sharded state dict with "model.", "ema." and "discriminator." prefixes, plus ``train_config.json``
    (the config and step): what a warm start needs, without the optimizer state. ``keep_float32``
    applies to both, with the training model's names (``autoencoder.encoder``) mapped to the
    tokenizer's (``model.encoder``). Returns the files written per folder.
    """
    path, out_dir = Path(checkpoint), Path(out_dir)
    state_path = path if path.is_file() else find_latest(path)
    if state_path is None:
        raise FileNotFoundError(f"no checkpoint (ckpt_XXXXXXXX.pt) in {path}")
    raw = load_checkpoint(state_path)
    if "model_ema" in raw:  # the trainer's optim.ema_decay average, same keys as "model"
        raw = {**raw, "ema": raw["model_ema"]["shadow"]}
    # the average is what ships; the raw weights stay in the train state
    state = {**raw, "model": raw["ema"]} if "ema" in raw else raw
    tok = _export_tokenizer(state, state_path, state_path, resolution)
    tok_dir = out_dir / "tokenizer"
    tok.save_pretrained(tok_dir, dtype=dtype, max_shard_bytes=max_shard_bytes,
                        keep_float32=tuple(_tokenizer_name(k) for k in keep_float32))
    written = {"tokenizer": sorted(p for p in tok_dir.iterdir() if p.is_file())}
    if train_state:
        flat = {f"{part}.{k}": v for part in TRAIN_STATE_PARTS if part in raw for k, v in raw[part].items()}
        keep = tuple(f"{part}.{k}" for part in ("model", "ema") for k in keep_float32)
        ts_dir = out_dir / TRAIN_STATE
        files = save_sharded(flat, ts_dir, prefix=TRAIN_STATE, dtype=dtype, max_shard_bytes=max_shard_bytes,
                             keep_float32=keep, metadata={"step": str(int(raw["step"]))})
        (ts_dir / "train_config.json").write_text(json.dumps({"step": int(raw["step"]), "config": raw["config"]},
                                                             indent=1) + "\n")
        written[TRAIN_STATE] = [*files, ts_dir / "train_config.json"]
    return written


def _tokenizer_name(train_name: str) -> str:
    """``autoencoder.encoder`` (training model) -> ``model.encoder`` (tokenizer)."""
    head, _, rest = train_name.partition(".")
    return f"model.{rest}" if head == "autoencoder" else train_name


def load_train_state(folder: str | Path) -> dict[str, Any]:
    """What ``export_half`` wrote to ``train-state/``: {"model": ..., "discriminator": ..., ("ema": ...),
    "step": int, "config": dict}, tensors in float32; for a warm start (fresh optimizers)."""
    folder = Path(folder)
    flat = read_weights(weights_file(folder, TRAIN_STATE))
    meta = json.loads((folder / "train_config.json").read_text())
    out: dict[str, Any] = {"step": int(meta["step"]), "config": meta["config"]}
    for key, value in flat.items():
        part, _, name = key.partition(".")
        out.setdefault(part, {})[name] = value
    return out
