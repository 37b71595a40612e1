"""Warm start (``run.init_from``): begin a run from an exported tokenizer folder.

The autoencoder (encoder, 1x1 convs, decoder) starts from the folder's weights. With
``codebook.source=fixed`` the codebook is the folder's, frozen: the transferred word codes stay
exactly as the transfer network made them (the slim tokenizer ships codes, not the GCN), and the
run fine-tunes encoder and decoder around them, as latent-diffusion VAEs fine-tune a decoder after
the fact. Every token keeps its word. Other sources train their codebook from scratch.

A second stage on CPU costs a fraction of a fresh run (``benchmarks/results/colour_probes.md``:
the colour fix applied to the shipped default as a fine-tune).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

#: Fields of VQCTConfig that must agree between the training config and the folder it starts from.
ARCHITECTURE_FIELDS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "mid_attention", "z_channels",
                       "codebook_dim", "norm_groups", "normalize_codes", "quantizer", "k_adjectives",
                       "shared_codebook")


class FixedCodebook(nn.Module):
    """The start folder's (K, D) codes, frozen; returned as the quantizer uses them.

    ``remap=True`` adds a trainable D×D linear map W, started at the identity: codebook = codes W
    (SimVQ's reparametrisation, Zhu et al. 2024, here over the transferred word codes). W moves all
    codes at once, so the codebook's spread can change while every row stays its word's code; export
    bakes codes W, so inference is unchanged. Without it the codes are returned bit for bit.
    """

    def __init__(self, codes: torch.Tensor, remap: bool = False) -> None:
        super().__init__()
        self.register_buffer("codes", codes.detach().float().clone())
        dim = codes.shape[1]
        self.remap = nn.Parameter(torch.eye(dim)) if remap else None
        # VQCTTrainModel.codebook() renormalises (cosine lookup) only rows a remap has moved
        self.final_rows = not remap

    def forward(self) -> torch.Tensor:
        if self.remap is None:
            return self.codes
        with torch.autocast(device_type=self.codes.device.type, enabled=False):
            return self.codes @ self.remap  # (K, D)


def load_start(folder: str | Path) -> Any:
    """The exported tokenizer in ``folder`` (a shipped model name or a local folder), on CPU in float32."""
    from ..tokenizer import VQCTTokenizer

    return VQCTTokenizer.from_pretrained(folder, local_files_only=True).float()


def check_architecture(train_config: Any, start_config: Any, folder: str | Path) -> None:
    """ConfigError naming every architecture field where the run's config and the folder's differ."""
    diffs = [f"{f}: config {getattr(train_config, f)!r}, {folder} {getattr(start_config, f)!r}"
             for f in ARCHITECTURE_FIELDS if getattr(train_config, f) != getattr(start_config, f)]
    if diffs:
        raise ConfigError(f"run.init_from={folder} has another architecture than the training config: "
                          + "; ".join(diffs) + ". Use the folder's training config (its config.json) as the base.")


def load_autoencoder(model: nn.Module, start: Any, folder: str | Path) -> None:
    """Copy the start tokenizer's encoder/decoder weights into ``model.autoencoder`` (exact shapes)."""
    check_architecture(model.config, start.config, folder)
    model.autoencoder.load_state_dict(start.model.state_dict(), strict=True)
