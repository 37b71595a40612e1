"""The autoencoder shared by the slim tokenizer and the trainer: encoder -> 1x1 -> quantizer -> 1x1 -> decoder.

The codebook is not owned here. The slim tokenizer passes its fixed buffer, the trainer passes the
codebook its transfer network (or learned embedding) produced this step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import VQCTConfig
from .autoencoder import Decoder, Encoder
from .quantizer import GroupedQuantizer


class VQAutoencoder(nn.Module):
    def __init__(self, cfg: VQCTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_channels, 1)  # z_channels -> G·D
        self.post_quant_conv = nn.Conv2d(cfg.embed_channels, cfg.z_channels, 1)  # G·D -> z_channels
        self.decoder = Decoder(cfg)
        self.quantizer = GroupedQuantizer(cfg.groups, cfg.codebook_dim, cfg.normalize_codes)

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> pre-quantization latent (B, G·D, H/f, W/f).

        Under the cosine lookup (``normalize_codes``) each group's D channels come out unit-norm.
        """
        return self.quantizer.normalize_latent(self.quant_conv(self.encoder(x)))

    def decode_latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, G·D, h, w) -> (B, 3, h·f, w·f) in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z_q))

    def encode_ids(self, x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> LongTensor (B, H/f, W/f, Σk)."""
        return self.quantizer.encode(self.encode_latent(x), codebook)

    def decode_ids(self, ids: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        return self.decode_latent(self.quantizer.lookup(ids, codebook).to(self.post_quant_conv.weight.dtype))
