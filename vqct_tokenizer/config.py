"""The one configuration object shared by inference, training and export.

``config.json`` beside the weights is exactly ``VQCTConfig.to_dict()``. Everything needed to rebuild
the network, interpret its token ids and preprocess images lives here, so a folder of
``config.json`` + ``model.safetensors`` + ``vocab.json`` is self-describing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError  # noqa: F401 - also importable from here, as before

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.json"

QUANTIZERS = ("vqct", "vq")
# Earlier versions called the VQCT quantizer "dual" (the training config already said "vqct"). The
# shipped weights and models exported before the rename say "dual" in config.json: they still load.
LEGACY_QUANTIZERS = {"dual": "vqct"}
RESIZE_MODES = ("center_crop", "resize", "pad")
ENCODER_NORMS = ("group", "layer", "local_group")
RESAMPLES = ("bicubic", "bilinear", "lanczos", "nearest")
#: The axes of a token grid, as token layouts name them (see ``VQCTConfig.token_layout``).
LAYOUT_AXES = ("row", "column", "slot")


@dataclass(frozen=True)
class CodeGroup:
    """One slot of a grid cell: a channel slice quantized against a range of codebook rows.

    ``k`` nearest codes are looked up and averaged; their ids are the slot's ``k`` tokens.
    """

    name: str
    code_start: int
    code_end: int
    k: int

    @property
    def size(self) -> int:
        return self.code_end - self.code_start


@dataclass
class VQCTConfig:
    # --- autoencoder (taming-transformers VQGAN family) ---
    resolution: int = 256
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    # self-attention in the middle block of encoder and decoder (taming has it). Without it, and with
    # no attn_resolutions, the network is fully convolutional: cost linear in pixels, any size.
    mid_attention: bool = True
    z_channels: int = 256
    norm_groups: int = 32
    # The encoder's norm layers. "group": GroupNorm with whole-image statistics (taming; every model
    # exported before 0.4). "layer" / "local_group": statistics per position, so the encoder computes
    # the same function at every image size and a cell's tokens depend only on its receptive field.
    # Weights of the three are interchangeable (same names and shapes).
    encoder_norm: str = "group"
    # The decoder's norm layers, the same three kinds. With GroupNorm a cell decodes differently with
    # what else is in the image; per position, a cell decodes the same anywhere (round 7 probed it
    # for flat colours: no gain in 1,200 steps, docs/BENCHMARKS.md). It does not change token ids.
    decoder_norm: str = "group"
    dropout: float = 0.0
    # --- quantizer ---
    # "vqct": VQCT's adjective half (k nearest, averaged) + noun half (nearest); "dual" before.
    # "vq":   a plain VQGAN codebook of num_codes entries, one id per cell.
    quantizer: str = "vqct"
    codebook_dim: int = 256
    num_adjectives: int = 0
    num_nouns: int = 0
    k_adjectives: int = 2
    # pos="single" ablation: both halves search the whole (A+N) codebook.
    shared_codebook: bool = False
    num_codes: int = 0
    # Cosine lookup: l2-normalise each group's latent and every code before the nearest-code search,
    # so codes are chosen by angle, not by norm (ViT-VQGAN's "l2-normalised codes"). The quantized
    # latent is then the (mean of the) unit-norm code(s). A small codebook_dim makes this the
    # "low-dimensional lookup": quant_conv already projects z_channels -> G·codebook_dim.
    normalize_codes: bool = False
    # --- preprocessing (what an image processor would hold) ---
    resize_mode: str = "center_crop"
    resample: str = "bicubic"
    # --- provenance, free-form ---
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        if isinstance(self.quantizer, str):
            self.quantizer = LEGACY_QUANTIZERS.get(self.quantizer, self.quantizer)
        self.validate()

    # ------------------------------------------------------------------ derived quantities
    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsample_factor

    @property
    def codebook_size(self) -> int:
        """Rows of the codebook tensor, i.e. the vocabulary size."""
        if self.quantizer == "vq":
            return self.num_codes
        return self.num_adjectives + self.num_nouns

    @property
    def groups(self) -> tuple[CodeGroup, ...]:
        if self.quantizer == "vq":
            return (CodeGroup("code", 0, self.num_codes, 1),)
        a, n = self.num_adjectives, self.num_nouns
        if self.shared_codebook:
            return (CodeGroup("adjective", 0, a + n, self.k_adjectives), CodeGroup("noun", 0, a + n, 1))
        return (CodeGroup("adjective", 0, a, self.k_adjectives), CodeGroup("noun", a, a + n, 1))

    @property
    def tokens_per_cell(self) -> int:
        return sum(g.k for g in self.groups)

    def token_layout(self, grid: tuple[int, int] | None = None) -> dict[str, Any]:
        """What a (h, w, k+1) token grid means: slots, groups and id ranges, vocabulary, ``grid``
        (rows, columns; None when sizes vary). Token files and tokenized datasets record exactly
        this; ``vqct_tokenizer.tokens.layout`` documents it and checks grids against it."""
        return {
            "axes": list(LAYOUT_AXES),
            "groups": [{"name": g.name, "k": g.k, "id_range": [g.code_start, g.code_end]} for g in self.groups],
            "slots": [g.name for g in self.groups for _ in range(g.k)],
            "tokens_per_cell": self.tokens_per_cell,
            "vocab_size": self.codebook_size,
            "downsample_factor": self.downsample_factor,
            "grid": [int(grid[0]), int(grid[1])] if grid is not None else None,
        }

    @property
    def embed_channels(self) -> int:
        """Channels of the quantized latent: D per group (2·D for vqct)."""
        return self.codebook_dim * len(self.groups)

    # ------------------------------------------------------------------ validation and io
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"invalid config: {msg}")

        need(self.quantizer in QUANTIZERS, f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        need(self.resize_mode in RESIZE_MODES, f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        need(self.resample in RESAMPLES, f"resample must be one of {RESAMPLES}, got {self.resample!r}")
        need(1 <= len(self.ch_mult) <= 8, f"ch_mult must have 1..8 entries, got {self.ch_mult}")
        need(all(1 <= m <= 64 for m in self.ch_mult), f"ch_mult entries must be in [1, 64], got {self.ch_mult}")
        need(8 <= self.resolution <= 8192, f"resolution must be in [8, 8192], got {self.resolution}")
        need(self.resolution % self.downsample_factor == 0,
             f"resolution {self.resolution} is not a multiple of the downsampling factor {self.downsample_factor}")
        need(1 <= self.ch <= 4096, f"ch must be in [1, 4096], got {self.ch}")
        need(0 <= self.num_res_blocks <= 16, f"num_res_blocks must be in [0, 16], got {self.num_res_blocks}")
        need(1 <= self.z_channels <= 8192, f"z_channels must be in [1, 8192], got {self.z_channels}")
        need(1 <= self.codebook_dim <= 8192, f"codebook_dim must be in [1, 8192], got {self.codebook_dim}")
        need(self.in_channels == 3 and self.out_channels == 3, "only RGB models (in/out_channels 3) are supported")
        need(self.norm_groups >= 1, f"norm_groups must be >= 1, got {self.norm_groups}")
        need(self.encoder_norm in ENCODER_NORMS,
             f"encoder_norm must be one of {ENCODER_NORMS}, got {self.encoder_norm!r}")
        need(self.decoder_norm in ENCODER_NORMS,
             f"decoder_norm must be one of {ENCODER_NORMS}, got {self.decoder_norm!r}")
        for c in {self.ch * m for m in (1, *self.ch_mult)}:
            need(c % self.norm_groups == 0, f"channel width {c} is not divisible by norm_groups {self.norm_groups}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(isinstance(self.normalize_codes, bool),
             f"normalize_codes must be true or false, got {self.normalize_codes!r}")
        if self.quantizer == "vq":
            need(1 <= self.num_codes <= 10_000_000, f"vq needs num_codes in [1, 1e7], got {self.num_codes}")
        else:
            need(1 <= self.num_adjectives <= 10_000_000, f"num_adjectives must be >= 1, got {self.num_adjectives}")
            need(1 <= self.num_nouns <= 10_000_000, f"num_nouns must be >= 1, got {self.num_nouns}")
            pool = self.codebook_size if self.shared_codebook else self.num_adjectives
            need(1 <= self.k_adjectives <= pool,
                 f"k_adjectives must be in [1, {pool}] (codes available), got {self.k_adjectives}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VQCTConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config has unknown fields {unknown}; known fields are {sorted(known)}")
        # Architecture fields have defaults for convenience in code, but a saved config must state
        # them: silently filling a missing field would build a different network than was trained.
        required = {"resolution", "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels",
                    "quantizer", "codebook_dim"}
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"config is missing required fields {missing}")
        try:
            return cls(**data)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config has a field of the wrong type: {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "VQCTConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def architecture_hash(self) -> str:
        """Short hash of everything that changes token ids (not provenance)."""
        d = self.to_dict()
        d.pop("extra")
        if d["quantizer"] == "vqct":  # hashed under its first name, "dual": token files keep their hashes
            d["quantizer"] = "dual"
        if d["mid_attention"]:  # the field is newer than the first models: keep their hashes
            d.pop("mid_attention")
        if not d["normalize_codes"]:  # newer still: models without cosine lookup keep their hashes
            d.pop("normalize_codes")
        if d["encoder_norm"] == "group":  # newer again: GroupNorm encoders keep their hashes (token files stay valid)
            d.pop("encoder_norm")
        d.pop("decoder_norm")  # the decoder does not choose tokens
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
