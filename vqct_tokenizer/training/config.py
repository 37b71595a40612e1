"""Training configuration: built-in defaults <- a JSON config file <- ``key.sub=value`` overrides.

Shipped configs live in ``vqct_tokenizer/training/configs/NAME.json`` and can be named without the
path (``vqct train --config faces64``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"

DEFAULTS: dict[str, Any] = {
    # the autoencoder: VQCTConfig fields (num_adjectives/num_nouns come from the prior)
    "model": {
        "resolution": 256, "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2,
        "attn_resolutions": [16], "mid_attention": True, "z_channels": 256, "codebook_dim": 256, "k_adjectives": 2,
        "norm_groups": 32, "dropout": 0.0,
        # group (GroupNorm, whole-image statistics) | layer | local_group (per position: the encoder is
        # the same function at any image size; models/autoencoder.py LocalGroupNorm)
        "encoder_norm": "group",
        # the same three for the decoder: per position, a cell decodes the same whatever else the image
        # holds, and a flat image is decoded as a flat region of a photo is
        "decoder_norm": "group",
    },
    "codebook": {
        "quantizer": "vqct",       # vqct (adjective + noun groups) | vq (plain VQGAN, num_codes)
        "source": "transfer",      # transfer (from word vectors) | learned (from scratch) | fixed (run.init_from's, frozen)
        "transfer": "gcn",         # gcn | mlp | linear
        "pos": "split",            # split (adjective + noun codebooks) | single (one codebook of all words)
        "word_vectors": "language",  # language (the prior's embeddings) | random (frozen Gaussian, same shape)
        "prior": "default",        # "default" or a prior folder
        "edge_weight": "count",    # count (co-occurrences, the paper) | log (1 + ln count) | binary
        "adjacency_norm": "row",   # row: D^-1 (A+I) | sym: D^-1/2 (A+I) D^-1/2 (collapses; see training/transfer.py)
        "center_words": "none",    # none | all | pos: subtract the word vectors' (per part-of-speech) mean
        # The paper puts dropout 0.5 on the GCN's hidden layer. We default to none: with 0.5, a fresh
        # network's training-time codebooks move by about half their norm from the eval-mode one that
        # export ships, and 99% of nearest-code choices change (tests/test_transfer.py).
        "gcn_dropout": 0.0,
        "num_codes": 1024,         # vq only
        # Learned-codebook baselines (source=learned only; training/learned_codebook.py). All off by default.
        "learned_init": "uniform",  # uniform (taming's U(-1/K, 1/K)) | kmeans (on the first batch's latents)
        "ema_decay": 0.0,           # 0: codes trained by the codebook loss; e.g. 0.99: EMA of assigned latents
        "restart_dead_after": 0,    # re-init a code unused for this many steps to a batch latent; 0: never
        "simvq": False,             # codebook = frozen random C @ learned linear map W (SimVQ)
        # source=fixed only: none (the start's codes, frozen) | linear (codes @ a trainable D×D map W,
        # started at the identity: SimVQ's reparametrisation over the word codes; warm_start.py)
        "remap": "none",
        # l2-normalised latents and codes, nearest by angle (any source; the exported tokenizer does the
        # same). With a small model.codebook_dim (8-32) this is ViT-VQGAN's low-dimensional lookup.
        "cosine": False,
    },
    "loss": {
        "recon": "l1", "perceptual": "effnet", "perceptual_weight": 1.0,
        "beta": 0.25, "codebook_weight": 1.0,
        # ste (straight-through) | rotation (Fifty et al. 2024's rotation trick) | none (a diagnostic control:
        # the decoder reads the unquantized latent, as a plain autoencoder; ids and VQ losses still computed)
        "quantizer_gradient": "ste",
        # L1 on the training photos' colour principal axes, axis i weighted (std_lum / std_i) ** a:
        # 0 = plain RGB L1, 1 = whitened colours (training/colour.py)
        "colour_balance": 0.0,
        # axes: the mean over the weighted axes (a grey error costs ~0.58x RGB L1's) | grey: rescaled so
        # that a grey error costs what RGB L1 charges
        "colour_balance_norm": "axes",
        # latent spread: spread_weight * Σ_groups max(0, 1/PR - 1/spread_floor), PR the centred
        # participation ratio of the batch's pre-quantization latents per group (losses.spread_loss).
        # It keeps the latents from bunching onto a few directions; 0 = off
        "spread_weight": 0.0, "spread_floor": 12.0,
        # low-pass reconstruction: lowpass_weight * the reconstruction loss between lowpass_cell x
        # lowpass_cell average-pooled input and output (losses.lowpass_loss). It charges a region's
        # mean colour again, which a perceptual loss barely does; 0 = off
        "lowpass_weight": 0.0, "lowpass_cell": 8,
        # the PatchGAN trains from disc_start; the decoder feels it from disc_start + disc_warmup, so a
        # fine-tune that adds the GAN to a trained autoencoder is not pushed around by an untrained critic
        "disc_start": 10000, "disc_warmup": 0, "disc_weight": 0.8, "disc_layers": 3, "disc_channels": 64,
    },
    "data": {"train": None, "crop": "resize", "scale": [0.33, 1.0], "flip": True, "workers": 2,
             # probability of rotating a crop's chroma by a random angle, scaled by a factor in saturation
             "hue_jitter": 0.0, "saturation": [1.0, 1.0],
             # probability of replacing a sample by a dead-leaves image of flat random colours (synthetic.py)
             "synthetic": 0.0,
             # share of those synthetic samples that are plain patterns (flat, gradient, hue ramp,
             # checkerboard: synthetic.plain_pattern) instead of dead leaves
             "synthetic_plain": 0.0,
             # every large_plain_every-th step also trains on large_plain_batch plain patterns of
             # large_plain_size px (0 = off). A 64 px crop is 8x8 cells, none more than 3 cells from
             # an edge: the decoder never sees the constant interior of a large flat area, and large
             # flats decode worse than small ones (docs/BENCHMARKS.md "Flat interiors")
             "large_plain_every": 0, "large_plain_size": 160, "large_plain_batch": 2},
    "optim": {
        "batch_size": 8, "lr": 7.2e-5, "betas": [0.5, 0.9], "steps": 100000, "grad_clip": 0.0,
        # linear warm-up, then constant or cosine decay to min_lr_ratio * lr at optim.steps (schedule.py)
        "warmup_steps": 0, "schedule": "constant", "min_lr_ratio": 0.1,
        # exponential moving average of the weights, exported instead of the raw weights; 0 = off
        "ema_decay": 0.0,
        # all | decoder: train only post_quant_conv and the decoder. Needs codebook.source=fixed (the
        # start's codes, frozen): encoder and codebook stay the start's bit for bit, so every image keeps
        # its tokens and token datasets made with the start stay valid (a decoder fine-tune, as
        # latent-diffusion VAEs get one after the fact) | encoder: train only the encoder and quant_conv
        # around the frozen codebook, post_quant_conv and decoder (also codebook.source=fixed), so a token
        # decodes as before and only which tokens an image gets changes: tokens fitted to the decoder
        "trainable": "all",
    },
    "run": {
        "out_dir": "runs/vqct", "seed": 0, "precision": "auto", "threads": 0, "channels_last": True,
        "ckpt_every": 1000, "keep": 3, "log_every": 50, "image_every": 1000, "usage_window": 50,
        # an exported tokenizer folder (or shipped model name) whose autoencoder weights the run starts
        # from; with codebook.source=fixed its codebook too, frozen (training/warm_start.py)
        "init_from": None,
    },
}


def load_config(config: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    cfg = copy.deepcopy(DEFAULTS)
    if config is not None:
        _merge(cfg, read_with_base(resolve_config_path(config)), "")
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def resolve_config_path(config: str | Path) -> Path:
    path = Path(config)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{config}.json"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    raise FileNotFoundError(f"config {config!r} is neither a file nor a shipped config ({', '.join(names)})")


def read_with_base(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its ``"base"`` chain resolved: ``{"base": "faces64", "codebook": {...}}`` is
    faces64 with only the stated keys changed. A base is a shipped config name or a path relative to
    the file that names it."""
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"config base cycle: {' -> '.join(p.name for p in (*_seen, path))}")
    data = _read(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: \"base\" must be a config name or path, got {base!r}")
    relative = path.parent / base
    base_path = relative if relative.is_file() else resolve_config_path(base)
    merged = read_with_base(base_path, (*_seen, path))
    _overlay(merged, data)
    return merged


def _overlay(base: dict[str, Any], new: dict[str, Any]) -> None:
    """Deep-merge ``new`` into ``base`` (no key checks: bases and old checkpoints are trusted files)."""
    for key, value in new.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _overlay(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _merge(base: dict[str, Any], new: dict[str, Any], prefix: str) -> None:
    for key, value in new.items():
        name = f"{prefix}{key}"
        if key.startswith("_"):  # comments
            continue
        if key not in base:
            raise ValueError(f"unknown config key {name!r}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {name!r} must be an object")
            _merge(base[key], value, name + ".")
        else:
            base[key] = value


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """``optim.lr=1e-4`` style; the value is parsed as JSON when it can be, else kept as a string."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ValueError(f"unknown config section in override {key!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ValueError(f"unknown config key {key!r}")
    node[parts[-1]] = value


def validate(cfg: dict[str, Any]) -> None:
    cb, loss, run = cfg["codebook"], cfg["loss"], cfg["run"]
    choices = {
        "codebook.quantizer": (cb["quantizer"], ("vqct", "vq")),
        "codebook.source": (cb["source"], ("transfer", "learned", "fixed")),
        "codebook.transfer": (cb["transfer"], ("gcn", "mlp", "linear")),
        "codebook.pos": (cb["pos"], ("split", "single")),
        "codebook.word_vectors": (cb["word_vectors"], ("language", "random")),
        "codebook.edge_weight": (cb["edge_weight"], ("count", "log", "binary")),
        "codebook.adjacency_norm": (cb["adjacency_norm"], ("row", "sym")),
        "codebook.center_words": (cb["center_words"], ("none", "all", "pos")),
        "codebook.remap": (cb["remap"], ("none", "linear")),
        "loss.recon": (loss["recon"], ("l1", "l2")),
        "loss.perceptual": (loss["perceptual"], ("effnet", "lpips-vgg", "none")),
        "loss.quantizer_gradient": (loss["quantizer_gradient"], ("ste", "rotation", "none")),
        "run.precision": (run["precision"], ("auto", "fp32", "bf16", "fp16")),
        "optim.schedule": (cfg["optim"]["schedule"], ("constant", "cosine")),
        "optim.trainable": (cfg["optim"]["trainable"], ("all", "decoder", "encoder")),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if cb["source"] == "fixed" and not run.get("init_from"):
        raise ValueError("codebook.source=fixed takes its codebook from run.init_from: set run.init_from to an "
                         "exported tokenizer folder or shipped model name")
    if cb["source"] == "fixed" and cb["quantizer"] != "vqct":
        raise ValueError("codebook.source=fixed is for the VQCT quantizer (word codes): set codebook.quantizer=vqct")
    if cb["quantizer"] == "vq" and cb["source"] != "learned":
        raise ValueError("codebook.quantizer=vq learns its codebook: set codebook.source=learned")
    if cb["remap"] != "none" and cb["source"] != "fixed":
        raise ValueError("codebook.remap maps a frozen start codebook: set codebook.source=fixed "
                         "(a transferred codebook already ends in a trainable linear layer)")
    if cfg["optim"]["trainable"] == "decoder" and (cb["source"] != "fixed" or cb["remap"] != "none"):
        raise ValueError("optim.trainable=decoder keeps every token as the start made it: set codebook.source=fixed "
                         "and codebook.remap=none (a trained codebook would change the tokens)")
    if cfg["optim"]["trainable"] == "encoder" and (cb["source"] != "fixed" or cb["remap"] != "none"):
        raise ValueError("optim.trainable=encoder keeps what every token decodes to: set codebook.source=fixed "
                         "and codebook.remap=none (a trained codebook would change the codes the frozen decoder reads)")
    _validate_learned_options(cb)
    spread_w, floor = loss["spread_weight"], loss["spread_floor"]
    if isinstance(spread_w, bool) or not isinstance(spread_w, (int, float)) or spread_w < 0:
        raise ValueError(f"loss.spread_weight must be a number >= 0 (0 = off), got {spread_w!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or floor <= 1.0:
        raise ValueError(f"loss.spread_floor must be a participation ratio > 1, got {floor!r}")
    low_w, cell = loss["lowpass_weight"], loss["lowpass_cell"]
    if isinstance(low_w, bool) or not isinstance(low_w, (int, float)) or low_w < 0:
        raise ValueError(f"loss.lowpass_weight must be a number >= 0 (0 = off), got {low_w!r}")
    if isinstance(cell, bool) or not isinstance(cell, int) or cell < 1:
        raise ValueError(f"loss.lowpass_cell must be a pooling size in pixels >= 1, got {cell!r}")
    _validate_large_plain(cfg)
    for key in ("disc_start", "disc_warmup"):
        if isinstance(loss[key], bool) or not isinstance(loss[key], int) or loss[key] < 0:
            raise ValueError(f"loss.{key} must be a step count >= 0, got {loss[key]!r}")
    if cfg["optim"]["batch_size"] < 1 or cfg["optim"]["steps"] < 0:
        raise ValueError("optim.batch_size must be >= 1 and optim.steps >= 0")
    if not 0.0 <= float(cfg["optim"]["ema_decay"]) < 1.0:
        raise ValueError(f"optim.ema_decay must be in [0, 1) (0 = off), got {cfg['optim']['ema_decay']!r}")
    balance = loss["colour_balance"]
    if isinstance(balance, bool) or not isinstance(balance, (int, float)) or not 0.0 <= balance <= 1.0:
        raise ValueError(f"loss.colour_balance must be a number in [0, 1] (0 = RGB L1), got {balance!r}")
    if loss["colour_balance_norm"] not in ("axes", "grey"):
        raise ValueError(f"loss.colour_balance_norm must be 'axes' or 'grey', got {loss['colour_balance_norm']!r}")
    if balance and loss["recon"] != "l1":
        raise ValueError("loss.colour_balance weights an L1: set loss.recon=l1")
    if int(cfg["optim"]["warmup_steps"]) < 0 or not 0.0 <= float(cfg["optim"]["min_lr_ratio"]) <= 1.0:
        raise ValueError("optim.warmup_steps must be >= 0 and optim.min_lr_ratio in [0, 1]")


def _validate_learned_options(cb: dict[str, Any]) -> None:
    if cb["learned_init"] not in ("uniform", "kmeans"):
        raise ValueError(f"codebook.learned_init must be one of ('uniform', 'kmeans'), got {cb['learned_init']!r}")
    ema = cb["ema_decay"]
    if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
        raise ValueError(f"codebook.ema_decay must be a number in [0, 1) (0 = off), got {ema!r}")
    restart = cb["restart_dead_after"]
    if isinstance(restart, bool) or not isinstance(restart, int) or restart < 0:
        raise ValueError(f"codebook.restart_dead_after must be an integer >= 0 (0 = off), got {restart!r}")
    for key in ("simvq", "cosine"):
        if not isinstance(cb[key], bool):
            raise ValueError(f"codebook.{key} must be true or false, got {cb[key]!r}")
    learned_options = [name for name, on in (("learned_init=kmeans", cb["learned_init"] == "kmeans"),
                                             ("ema_decay", ema > 0), ("restart_dead_after", restart > 0),
                                             ("simvq", cb["simvq"])) if on]
    if learned_options and cb["source"] != "learned":
        raise ValueError(f"codebook.{learned_options[0]} shapes a learned codebook: set codebook.source=learned")
    if cb["simvq"] and len(learned_options) > 1:
        # SimVQ's codes are C @ W: no single row can be set (k-means, restart) or averaged (EMA) on its own
        raise ValueError("codebook.simvq cannot be combined with learned_init=kmeans, ema_decay or restart_dead_after")


def complete_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an older version (a checkpoint's) with the keys added since filled from DEFAULTS."""
    out = copy.deepcopy(DEFAULTS)
    _overlay(out, cfg)
    return out


def _validate_large_plain(cfg: dict[str, Any]) -> None:
    data = cfg["data"]
    every, size, batch = data["large_plain_every"], data["large_plain_size"], data["large_plain_batch"]
    for key, value, low in (("large_plain_every", every, 0), ("large_plain_size", size, 1), ("large_plain_batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}")
    factor = 2 ** (len(cfg["model"]["ch_mult"]) - 1)
    if every and size % factor:
        raise ValueError(f"data.large_plain_size {size} is not a multiple of the downsampling factor {factor}")
