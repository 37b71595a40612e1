"""Tiled native-size encode and decode: memory bounded by the tile, not the image.

A native-size image larger than one tile is cut into overlapping square tiles on the token grid
(as diffusers' AutoencoderKL/VQModel and NVIDIA Cosmos tile large inputs). Tiles start on cell
boundaries (multiples of the downsampling factor f in pixels), so every tile's grid lines up with
the whole image's grid; tiles along an axis are spread evenly, each overlapping the next by at
least the overlap.

* Encode: every cell takes its ids from the tile in which it lies farthest from a tile border (the
  image's own border does not count), i.e. cuts run down the middle of each overlap, so a cell next
  to a cut still sees half the overlap of context on that side.
* Decode: each latent tile is decoded and blended into the image with weights that ramp linearly
  across the overlap with each neighbour; the weights of all tiles sum to one at every pixel, so a
  constant image stays constant across the seams.

Tiling is exact for a fully convolutional model only up to two effects: a convolution near a tile
border sees zero padding instead of the neighbouring pixels (hence the overlap), and GroupNorm's
statistics are those of the tile rather than of the whole image. ``benchmarks/tiling.py`` measures
what that does to tokens and pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


def tile_layout(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """(starts, size) of the fewest tiles of at most ``tile`` covering ``[0, length)`` with
    consecutive tiles overlapping by at least ``overlap`` (all in cells). The tiles share one size,
    as small as that count allows (no tile mostly repeats its neighbour), spread evenly."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"tiles need 0 <= overlap < tile, got tile {tile}, overlap {overlap}")
    if length <= tile:
        return [0], length
    n = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    return [round(k * (length - size) / (n - 1)) for k in range(n)], size


def owned_ranges(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the cells ``[lo, hi)`` it is deepest inside of: cuts at the middle of each overlap."""
    cuts = [0] + [(s + size - 1 + nxt) // 2 + 1 for s, nxt in zip(starts, starts[1:])] + [length]
    return list(zip(cuts, cuts[1:]))


def blend_weights(starts: list[int], size: int, length: int) -> list[torch.Tensor]:
    """Per tile, a 1-D weight over its ``size`` positions: a linear ramp across the overlap with each
    neighbour, 1 elsewhere; the weights of all tiles sum to 1 at every position."""
    pos = torch.arange(size, dtype=torch.float64) + 0.5  # pixel centres, so no weight is exactly 0
    weights = []
    for k, s in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        if k > 0:
            w = torch.minimum(w, pos / (starts[k - 1] + size - s))
        if k + 1 < len(starts):
            w = torch.minimum(w, (size - pos) / (s + size - starts[k + 1]))
        weights.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for s, w in zip(starts, weights):
        total[s:s + size] += w
    # two tiles' ramps already sum to 1; dividing also covers a spot where three tiles overlap
    return [(w / total[s:s + size]).float() for s, w in zip(starts, weights)]


#: Resident memory of the interpreter with torch and the package loaded, before the model (measured).
RUNTIME_BYTES = 300 * 2 ** 20


def native_memory_bytes(config: Any, height: int, width: int, tile_size: int | None, model_bytes: int) -> int:
    """About how much memory (peak resident) encoding, then decoding, one native image of
    height x width pixels takes in one process: the runtime and model, one tile's activations,
    and what grows with the image: per pixel, the image as 8-bit and float32 (16 bytes) plus, at
    the peak of the tiled encode, the whole-image outputs of two consecutive encoder stages (96
    bytes for the f = 8 default model). Checked against peaks measured with vqct-open-f8
    (``benchmarks/tiling.py``, memory part); for messages, not a guarantee."""
    outputs = [4.0 * config.ch * mult / 4 ** (i + 1) for i, mult in enumerate(config.ch_mult[:-1])]
    pairs = [a + b for a, b in zip(outputs, outputs[1:])] or outputs or [0.0]
    side = min(tile_size or max(height, width), max(height, width))
    # the decoder's full-resolution level dominates a tile: about 7 activations of ch channels
    tile_bytes = 7 * 4 * config.ch * side * side
    return int(RUNTIME_BYTES + model_bytes + tile_bytes + (16 + max(pairs)) * height * width)


class _Stop(Exception):
    """Ends a tile's run at the first GroupNorm whose whole-image statistics are still unknown."""


class _WholeImageNorms:
    """The GroupNorm layers of one stage, normalising with statistics of the whole image.

    GroupNorm normalises over all positions, so a tile normalised by its own statistics gives other
    values everywhere, and VQCT's dense word codebook turns that into other tokens almost
    everywhere (1-5 % of cells kept on the open test photos). Instead each layer's mean and
    variance are summed over all tiles first (a sweep over the tiles that stops at that layer),
    then applied: the sweeps make a stage cost about (number of its norms + 1) partial passes.
    Per-position norms (``encoder_norm`` "layer" / "local_group") are not GroupNorm layers: they need
    no statistics, and a stage of them runs each tile once.
    """

    def __init__(self, norms: list[nn.GroupNorm]) -> None:
        self.norms = norms
        self.scale_shift: dict[nn.GroupNorm, tuple[torch.Tensor, torch.Tensor]] = {}
        self.target: nn.GroupNorm | None = None
        self.sums: torch.Tensor | None = None
        self.count = 0
        self.owned: tuple[tuple[int, int, int, int], tuple[int, int]] = ((0, 0, 0, 0), (1, 1))

    def __enter__(self) -> "_WholeImageNorms":
        for norm in self.norms:
            norm.forward = functools.partial(self._forward, norm)  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc: object) -> None:
        for norm in self.norms:
            del norm.forward

    @property
    def pending(self) -> bool:
        return len(self.scale_shift) < len(self.norms)

    def _forward(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if norm in self.scale_shift:
            scale, shift = self.scale_shift[norm]
            return torch.addcmul(shift, x, scale)
        if self.target not in (None, norm):
            raise RuntimeError("tiles of one stage reached different GroupNorm layers first")
        (r0, r1, c0, c1), (th, tw) = self.owned
        py, px = h // th, w // tw  # positions per cell at this layer's resolution
        part = x[:, :, r0 * py:r1 * py, c0 * px:c1 * px].double().reshape(b, norm.num_groups, -1)
        sums = torch.stack([part.sum(-1), part.square().sum(-1)])
        self.sums = sums if self.sums is None else self.sums + sums
        self.target, self.count = norm, self.count + part.shape[-1]
        raise _Stop

    def close_sweep(self) -> None:
        """Turn the sums of the sweep just run into the target layer's per-channel scale and shift."""
        norm, (total, squares) = self.target, self.sums / self.count
        mean, var = total, (squares - total.square()).clamp_min(0.0)
        rstd = (var + norm.eps).rsqrt()
        per_group = norm.num_channels // norm.num_groups
        scale = rstd.repeat_interleave(per_group, dim=1) * norm.weight.double()
        shift = norm.bias.double() - mean.repeat_interleave(per_group, dim=1) * scale
        dtype = norm.weight.dtype
        self.scale_shift[norm] = (scale.to(dtype)[:, :, None, None], shift.to(dtype)[:, :, None, None])
        self.target, self.sums, self.count = None, None, 0


@dataclass
class _Stage:
    """Part of the encoder between two downsamplings: ``run`` maps a tile of its input to a tile of
    its output; ``halo`` is how far, in input pixels, an output position sees."""

    modules: list[nn.Module]
    run: Callable[[torch.Tensor], torch.Tensor]

    @property
    def halo(self) -> int:
        # a stride-1 k x k conv sees (k - 1) / 2 pixels each way; the stride-2 downsampling conv,
        # padded on the right only, up to k - 1
        return sum((m.kernel_size[0] - 1) // (1 if m.stride[0] > 1 else 2)
                   for mod in self.modules for m in mod.modules() if isinstance(m, nn.Conv2d))

    @property
    def norms(self) -> list[nn.GroupNorm]:
        return [m for mod in self.modules for m in mod.modules() if isinstance(m, nn.GroupNorm)]

    @property
    def channels(self) -> int:
        return max(m.out_channels for mod in self.modules for m in mod.modules() if isinstance(m, nn.Conv2d))

    @property
    def attention(self) -> bool:
        return any(type(m).__name__ == "AttnBlock" for mod in self.modules for m in mod.modules())


def _encoder_stages(model: Any) -> list[_Stage]:
    """The encoder (then quant_conv) as stages ending at each downsampling; the last gives the latent."""
    enc, levels = model.encoder, list(model.encoder.down)
    stages = []
    for i, level in enumerate(levels):
        first = [enc.conv_in] if i == 0 else []
        if i < len(levels) - 1:
            def run(h: torch.Tensor, level: Any = level, first: list = first) -> torch.Tensor:
                for m in first:
                    h = m(h)
                return level.downsample(level.run(h))
            stages.append(_Stage([*first, level], run))
        else:
            def run(h: torch.Tensor, level: Any = level, first: list = first) -> torch.Tensor:
                for m in first:
                    h = m(h)
                return model.quantizer.normalize_latent(model.quant_conv(enc.forward_head(enc.mid(level.run(h)))))
            stages.append(_Stage([*first, level, enc.mid, enc.norm_out, enc.conv_out, model.quant_conv], run))
    return stages


def encode_tiled(model: Any, codebook: torch.Tensor, x: torch.Tensor, f: int, tile_size: int) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1], H and W multiples of f -> ids (1, H/f, W/f, k), the tokens of
    ``model.encode_ids(x, codebook)`` computed tile by tile.

    Stage by stage (see ``_encoder_stages``), the stage's input for the whole image is cut into
    tiles that overlap by twice the stage's halo; each tile's output keeps only the cells it owns,
    so every kept value saw its full receptive field, and GroupNorm uses whole-image statistics
    (``_WholeImageNorms``). The result is the whole-image computation up to float rounding. The
    first stage's tiles are ``tile_size`` pixels a side; later stages, at lower resolution, take
    tiles of as many values (positions x channels), and a stage whose input fits one tile, or
    that has self-attention, runs whole. Memory: the stage outputs of the whole image (for the
    f = 8 default model at most 96 bytes per image pixel, between the second and third stages)
    plus one tile's activations.
    """
    h, w = x.shape[2] // f, x.shape[3] // f
    stages = _encoder_stages(model)
    budget = tile_size ** 2 * stages[0].channels
    ids: torch.Tensor | None = None
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        per_cell = x.shape[2] // h  # input pixels per cell at this stage
        tile = int((budget / stage.channels) ** 0.5) // per_cell
        if stage.attention or (h <= tile and w <= tile):
            x = stage.run(x)  # whole (attention sees every position: no tiling reproduces it)
            if last:
                ids = model.quantizer.encode(x, codebook)
            continue
        halo = -(-stage.halo // per_cell)  # in cells
        if 2 * halo >= tile:
            raise ValueError(f"tiles of {tile} cells are too small for this model: a stage needs {halo} cells of "
                             f"context on each side, so tiles must be over {2 * halo} cells")
        (rows, th), (cols, tw) = tile_layout(h, tile, 2 * halo), tile_layout(w, tile, 2 * halo)
        tiles = [(r, c, (r0 - r, r1 - r, c0 - c, c1 - c))
                 for r, (r0, r1) in zip(rows, owned_ranges(rows, th, h))
                 for c, (c0, c1) in zip(cols, owned_ranges(cols, tw, w))]

        def tile_input(r: int, c: int) -> torch.Tensor:
            return x[:, :, r * per_cell:(r + th) * per_cell, c * per_cell:(c + tw) * per_cell]

        out: torch.Tensor | None = None
        with _WholeImageNorms(stage.norms) as norms:
            while norms.pending:  # one sweep per norm, in the order the stage meets them
                for r, c, owned in tiles:
                    norms.owned = (owned, (th, tw))
                    try:
                        stage.run(tile_input(r, c))
                    except _Stop:
                        pass
                norms.close_sweep()
            for r, c, (r0, r1, c0, c1) in tiles:
                y = stage.run(tile_input(r, c))
                q = y.shape[2] // th  # output positions per cell
                kept = y[:, :, r0 * q:r1 * q, c0 * q:c1 * q]
                if last:
                    kept = model.quantizer.encode(kept, codebook)
                    if ids is None:
                        ids = kept.new_empty(1, h, w, kept.shape[-1])
                    ids[:, r + r0:r + r1, c + c0:c + c1] = kept
                    continue
                if out is None:
                    out = y.new_empty(1, y.shape[1], h * q, w * q)
                out[:, :, (r + r0) * q:(r + r1) * q, (c + c0) * q:(c + c1) * q] = kept
        if out is not None:
            x = out  # the previous stage's whole-image tensor goes here
    assert ids is not None
    return ids


def decode_tiled(decode: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor, f: int, tile: int,
                 overlap: int) -> torch.Tensor:
    """ids (1, h, w, k) -> image (1, 3, h·f, w·f) float32 from ``decode`` run tile by tile and
    blended; ``tile`` and ``overlap`` in cells."""
    h, w = ids.shape[1], ids.shape[2]
    (rows, th), (cols, tw) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    # ramps at pixel resolution: a seam fades over (at least) overlap * f pixels
    row_w = blend_weights([r * f for r in rows], th * f, h * f)
    col_w = blend_weights([c * f for c in cols], tw * f, w * f)
    out = torch.zeros(1, 3, h * f, w * f, dtype=torch.float32, device=ids.device)
    for r, wr in zip(rows, row_w):
        for c, wc in zip(cols, col_w):
            pixels = decode(ids[:, r:r + th, c:c + tw]).float()
            weight = wr.to(pixels.device)[:, None] * wc.to(pixels.device)[None, :]
            out[:, :, r * f:(r + th) * f, c * f:(c + tw) * f].addcmul_(pixels, weight)
    return out
