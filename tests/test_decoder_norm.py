"""The decoder's norm: GroupNorm (whole-image statistics) against per-position norms.

With GroupNorm a cell decodes differently with what else the image holds (round 6's default decoded
the centre of a flat blue image at 24.7 dB, and the same blue as a 128² square inside photos at
36.3 dB, averaged over 4 photos). ``decoder_norm="layer"`` / ``"local_group"`` compute the statistics
per position. The decoder does not choose tokens, so the field leaves token files valid.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vqct_tokenizer.config import ConfigError, VQCTConfig
from vqct_tokenizer.interop import check_diffusers_compatible
from vqct_tokenizer.models.autoencoder import Decoder, LocalGroupNorm

from conftest import make_tokenizer, random_rgb, tiny_config

CONV_ONLY = {"attn_resolutions": (), "mid_attention": False}  # attention would see every position


@pytest.mark.parametrize("norm, local", [("group", False), ("layer", True), ("local_group", True)])
def test_a_cells_decoding_depends_on_the_rest_of_the_grid_only_with_group_norm(norm, local):
    torch.manual_seed(0)
    decoder = Decoder(tiny_config(decoder_norm=norm, **CONV_ONLY)).eval()
    z = torch.randn(1, decoder.conv_in.in_channels, 32, 32)
    changed = z.clone()
    changed[..., :4] = torch.randn(1, z.shape[1], 32, 4)  # the left eighth of the cells
    with torch.no_grad():
        # f = 4: pixels of cells 24+; the decoder's receptive field reaches about 13 cells
        far = (decoder(z) - decoder(changed))[..., 96:]
    if local:
        assert far.abs().max() < 1e-5
    else:
        assert far.abs().max() > 1e-3


def test_with_a_per_position_norm_a_flat_latent_decodes_alike_at_any_size():
    torch.manual_seed(0)
    decoders = {n: Decoder(tiny_config(decoder_norm=n, **CONV_ONLY)).eval() for n in ("group", "layer")}
    flat = torch.randn(1, decoders["group"].conv_in.in_channels, 1, 1).expand(1, -1, 64, 64)
    gaps = {}
    with torch.no_grad():
        for name, decoder in decoders.items():
            small, large = decoder(flat[..., :24, :24]), decoder(flat)
            gaps[name] = (small[..., 48, 48] - large[..., 128, 128]).abs().max().item()
    assert gaps["layer"] < 1e-5
    assert gaps["group"] > 1e-3


def test_group_norm_weights_load_into_a_per_position_decoder():
    group = Decoder(tiny_config())
    layer = Decoder(tiny_config(decoder_norm="layer"))
    layer.load_state_dict(group.state_dict(), strict=True)
    assert any(isinstance(m, LocalGroupNorm) for m in layer.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in layer.modules())


def test_the_decoder_norm_is_saved_checked_defaults_to_group_and_keeps_the_token_hash():
    config = tiny_config(decoder_norm="layer")
    assert VQCTConfig.from_dict(config.to_dict()).decoder_norm == "layer"
    older = config.to_dict()
    del older["decoder_norm"]
    assert VQCTConfig.from_dict(older).decoder_norm == "group"
    assert config.architecture_hash() == tiny_config().architecture_hash()  # same tokens
    with pytest.raises(ConfigError, match="decoder_norm must be one of"):
        tiny_config(decoder_norm="batch")
    with pytest.raises(ValueError, match="decoder_norm='layer'"):
        check_diffusers_compatible(tiny_config(decoder_norm="layer", normalize_codes=False))


def test_tiled_decoding_of_a_per_position_decoder_matches_the_whole_grid_closer_than_group_norm():
    gaps = {}
    for norm in ("group", "layer"):
        tok = make_tokenizer(decoder_norm=norm, **CONV_ONLY)
        ids = tok.encode(random_rgb(192, 288, seed=2), resize=False)
        tok.tile_size = None
        whole = tok.decode(ids, output_type="pt")
        tok.tile_size = 128
        tiled = tok.decode(ids, output_type="pt")
        gaps[norm] = (whole - tiled).abs().max().item()
    assert gaps["layer"] < 0.5 * gaps["group"]
