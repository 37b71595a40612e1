"""Encoder and decoder of the VQGAN (taming-transformers) family.

ResNet blocks with GroupNorm (or a per-position norm: ``VQCTConfig.encoder_norm`` / ``decoder_norm``) + SiLU, single-head self-attention at the configured resolutions,
strided-conv downsampling and nearest-neighbour + conv upsampling. The module tree follows the
taming layout (``down.{i}.block.{j}``, ``mid.block_1`` ...) so weights map one-to-one onto other
implementations of the same architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ENCODER_NORMS, VQCTConfig


#: ``VQCTConfig.encoder_norm`` values (``config.ENCODER_NORMS``). "group": taming's GroupNorm, whose
#: statistics span the whole image. "layer" and "local_group": statistics per position (over all
#: channels, or within each of ``norm_groups`` groups), so a cell's latent depends only on the pixels
#: in its receptive field.


class LocalGroupNorm(nn.Module):
    """GroupNorm with statistics per position: at every (h, w) each group's channels are normalised to
    zero mean and unit variance, then scaled and shifted per channel. ``groups=1`` is a LayerNorm over
    channels (ConvNeXt's LayerNorm2d).

    Why: GroupNorm's statistics span the whole image, so an encoder trained on 64² crops meets other
    statistics on a 256² photo; on flat inputs the gap is large (flat black: 44 dB at 64², 21 dB at
    256², docs/BENCHMARKS.md "Image size"). A per-position norm computes the same function at any size.
    Parameter names and shapes are GroupNorm's, so weights of either load into the other.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.num_groups == 1:
            # channels-last is the layout the encoder runs in: there the permuted view is contiguous
            # and layer_norm runs fused, with no copy
            y = F.layer_norm(x.permute(0, 2, 3, 1).float(), (c,), self.weight.float(), self.bias.float(), self.eps)
            return y.permute(0, 3, 1, 2).to(x.dtype)
        g = x.float().reshape(b, self.num_groups, c // self.num_groups, h, w)
        var, mean = torch.var_mean(g, dim=2, correction=0, keepdim=True)
        g = ((g - mean) * torch.rsqrt(var + self.eps)).reshape(b, c, h, w)
        return (g * self.weight[:, None, None] + self.bias[:, None, None]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, per position"


def _norm(channels: int, groups: int, kind: str = "group") -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)
    if kind == "layer":
        return LocalGroupNorm(1, channels)
    if kind == "local_group":
        return LocalGroupNorm(groups, channels)
    raise ValueError(f"norm must be one of {ENCODER_NORMS}, got {kind!r}")


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0,
                 norm: str = "group") -> None:
        super().__init__()
        self.norm1 = _norm(in_channels, groups, norm)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels, groups, norm)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place where no graph is recorded: one full-size tensor less to allocate and fill
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int, groups: int, norm: str = "group") -> None:
        super().__init__()
        self.norm = _norm(channels, groups, norm)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        # (B, C, H, W) -> (B, 1, HW, C): one head, sequence of pixels
        # contiguous: strided q/k/v push CPU attention onto the path that builds the full HW×HW matrix
        q, k, v = (t(n).reshape(b, 1, c, h * w).transpose(-1, -2).contiguous() for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # asymmetric pad so that H -> H/2 exactly, as in taming
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``blocks`` (ResnetBlock, AttnBlock where ``attention``) pairs from
    ``block_in`` to ``block_out`` channels; the encoder or decoder adds its resampler."""

    def __init__(self, block_in: int, block_out: int, blocks: int, attention: bool, cfg: VQCTConfig,
                 norm: str = "group") -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for _ in range(blocks):
            self.block.append(ResnetBlock(block_in, block_out, cfg.norm_groups, cfg.dropout, norm))
            block_in = block_out
            if attention:
                self.attn.append(AttnBlock(block_out, cfg.norm_groups, norm))

    def run(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, groups: int, dropout: float, attention: bool = True,
                 norm: str = "group") -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, dropout, norm)
        self.attn_1 = AttnBlock(channels, groups, norm) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, groups, dropout, norm)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, z_channels, H/f, W/f). Its norms are ``cfg.encoder_norm``."""

    def __init__(self, cfg: VQCTConfig) -> None:
        super().__init__()
        g, ch, norm = cfg.norm_groups, cfg.ch, cfg.encoder_norm
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.ch_mult):
            block_in, block_out = ch * in_mult[i], ch * mult
            level = _Level(block_in, block_out, cfg.num_res_blocks, res in cfg.attn_resolutions, cfg, norm)
            block_in = block_out
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, g, cfg.dropout, cfg.mid_attention, norm)
        self.norm_out = _norm(block_in, g, norm)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_trunk(x))

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """conv_in, the down levels and the middle block: all but the last norm and conv."""
        h = self.conv_in(x)
        for level in self.down:
            h = level.run(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return self.mid(h)

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        """norm_out -> SiLU -> conv_out (the bf16 fast path runs this part in float32)."""
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h·f, w·f), roughly in [-1, 1] (not clamped). Its norms are
    ``cfg.decoder_norm``."""

    def __init__(self, cfg: VQCTConfig) -> None:
        super().__init__()
        g, ch = cfg.norm_groups, cfg.ch
        block_in = ch * cfg.ch_mult[-1]
        res = cfg.latent_size
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        norm = cfg.decoder_norm
        self.mid = _Mid(block_in, g, cfg.dropout, cfg.mid_attention, norm)
        levels = []
        for i in reversed(range(len(cfg.ch_mult))):
            block_out = ch * cfg.ch_mult[i]
            level = _Level(block_in, block_out, cfg.num_res_blocks + 1, res in cfg.attn_resolutions, cfg, norm)
            block_in = block_out
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)  # keep taming's indexing: up[0] is the full-resolution level
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in, g, norm)
        self.conv_out = nn.Conv2d(block_in, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level.run(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight the GAN's adaptive weight differentiates against."""
        return self.conv_out.weight
