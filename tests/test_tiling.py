"""Tiled native encode and decode (vqct_tokenizer.tiling): the layout of tiles, exact tiled tokens,
and seamless blending. Tiles are forced with small ``tile_size`` on the tiny test models."""

from __future__ import annotations

import pytest
import torch

import vqct_tokenizer.tiling as tiling
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.tiling import blend_weights, decode_tiled, owned_ranges, tile_layout

from conftest import make_tokenizer, random_rgb


# ---------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("tile,overlap", [(4, 1), (8, 0), (16, 6), (64, 14)])
def test_tiles_cover_the_axis_with_the_overlap_and_weights_that_sum_to_one(tile, overlap):
    for length in range(1, 200):
        starts, size = tile_layout(length, tile, overlap)
        assert size <= tile and starts[0] == 0 and starts[-1] + size == length
        assert all(a + size - b >= overlap for a, b in zip(starts, starts[1:]))  # consecutive tiles overlap enough
        owned = owned_ranges(starts, size, length)
        assert [lo for lo, _ in owned][1:] == [hi for _, hi in owned][:-1] and owned[-1][1] == length
        for s, (lo, hi) in zip(starts, owned):  # an owned cell is at least overlap // 2 inside its tile
            assert s <= lo < hi <= s + size
            assert (lo == 0 or lo - s >= overlap // 2) and (hi == length or s + size - hi >= overlap // 2)
        total = torch.zeros(length)
        for s, w in zip(starts, blend_weights(starts, size, length)):
            assert (w > 0).all()
            total[s:s + size] += w
        assert torch.allclose(total, torch.ones(length), atol=1e-6)


def test_tile_layout_rejects_an_overlap_as_large_as_the_tile():
    with pytest.raises(ValueError, match="overlap < tile"):
        tile_layout(100, 8, 8)


# ---------------------------------------------------------------------------------------- encode
def _sweeps(monkeypatch) -> list[int]:
    """Counts the whole-image GroupNorm statistics the tiled encoder gathers (one per sweep)."""
    calls: list[int] = []
    close = tiling._WholeImageNorms.close_sweep

    def spy(self):
        calls.append(1)
        close(self)

    monkeypatch.setattr(tiling._WholeImageNorms, "close_sweep", spy)
    return calls


@pytest.mark.parametrize("attention", [False, True], ids=["conv-only", "attention"])
def test_tiled_tokens_equal_whole_image_tokens(attention, monkeypatch):
    """Measured: 100 % identical on these images and on the open test photos with vqct-open-f8
    (benchmarks/tiling.py); the bound leaves room for a near-tied cell flipped by float rounding."""
    overrides = {} if attention else {"attn_resolutions": (), "mid_attention": False}
    tok = make_tokenizer(**overrides)
    images = [random_rgb(136, 200, seed=1), random_rgb(200, 96, seed=2)]
    tok.tile_size = None
    whole = [tok.encode(im, resize=False) for im in images]
    sweeps = _sweeps(monkeypatch)
    tok.tile_size = 64  # f = 4: 16-cell tiles in the first stage, several per axis in every tiled stage
    tiled = [tok.encode(im, resize=False) for im in images]
    assert sweeps, "the images were not tiled"
    for a, b in zip(whole, tiled):
        assert a.shape == b.shape
        assert (a == b).all(-1).float().mean() >= 0.995


def test_images_that_fit_one_tile_run_whole(monkeypatch):
    tok = make_tokenizer(attn_resolutions=(), mid_attention=False)
    sweeps = _sweeps(monkeypatch)
    tok.tile_size = 64
    tok.encode(random_rgb(64, 60), resize=False)
    assert not sweeps


def test_a_tile_smaller_than_the_receptive_field_is_refused():
    tok = make_tokenizer(attn_resolutions=(), mid_attention=False)
    tok.tile_size = 16  # the last stage needs 7 cells of context on each side
    with pytest.raises(ValueError, match="too small for this model"):
        tok.encode(random_rgb(136, 200), resize=False)


# ---------------------------------------------------------------------------------------- decode
def _fake_decoder(offsets: list[float], f: int):
    """A decoder whose image is the cell's first id, upsampled f times, plus a per-tile offset: what
    GroupNorm's per-tile statistics do to a real decoder (a tone shift per tile)."""
    def decode(ids: torch.Tensor) -> torch.Tensor:
        value = ids[..., 0].float() + offsets[len(calls)]
        calls.append(tuple(ids.shape))
        return value.repeat_interleave(f, 1).repeat_interleave(f, 2)[:, None].expand(-1, 3, -1, -1)

    calls: list[tuple] = []
    return decode, calls


def test_blending_keeps_a_constant_latent_constant_across_seams():
    ids = torch.full((1, 50, 70, 3), 5)
    decode, calls = _fake_decoder([0.0] * 100, f=4)
    out = decode_tiled(decode, ids, 4, 16, 4)
    assert len(calls) > 4 and out.shape == (1, 3, 200, 280)
    assert torch.allclose(out, torch.full_like(out, 5.0), atol=1e-5)


def test_blending_spreads_a_tile_to_tile_shift_over_the_overlap():
    """Tiles that disagree by 1.0 change by at most 1 / (overlap in pixels) between neighbouring
    pixels; a hard cut at the same place would jump by 1.0."""
    ids = torch.zeros((1, 30, 30, 3), dtype=torch.long)
    decode, calls = _fake_decoder([float(i % 2) for i in range(100)], f=4)
    out = decode_tiled(decode, ids, 4, 12, 4)  # 16-pixel overlaps
    assert len(calls) > 1
    jumps = max((out[..., 1:] - out[..., :-1]).abs().max(), (out[..., 1:, :] - out[..., :-1, :]).abs().max())
    assert 0 < jumps <= 1 / 16 + 1e-5


def test_tiled_decode_of_a_model_matches_the_whole_decode_where_one_tile_covers_it():
    tok = make_tokenizer(attn_resolutions=(), mid_attention=False)
    grid = tok.encode(random_rgb(64, 96, seed=3), resize=False)
    tok.tile_size = None
    whole = tok.decode(grid, output_type="pt")
    tok.tile_size, tok.tile_overlap = 512, 64
    assert torch.equal(tok.decode(grid, output_type="pt"), whole)  # 96 px < one tile: not tiled
    tok.tile_size, tok.tile_overlap = 32, 8
    tiled = tok.decode(grid, output_type="pt")
    assert tiled.shape == whole.shape and not torch.equal(tiled, whole)


@pytest.mark.parametrize("height, width, tiled", [(432, 640, False), (640, 640, False), (427, 648, True),
                                                  (1024, 200, True), (3000, 2000, True)])
def test_default_tiles_leave_images_up_to_640_px_a_side_whole(height, width, tiled):
    """COCO-sized photos (640 px on the long side) run whole: faster than two tiles, and exact."""
    tok = make_tokenizer(attn_resolutions=(), mid_attention=False)
    assert VQCTTokenizer.tile_size == 640
    f = tok.downsample_factor
    padded = (-(-height // f) * f, -(-width // f) * f)
    assert (tok._tile_cells(*padded) is not None) == tiled
