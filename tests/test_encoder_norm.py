"""The encoder's norm: GroupNorm (whole-image statistics) against per-position norms.

GroupNorm makes every cell's latent depend on the whole image, so an encoder trained on 64² crops
encodes a 256² photo with other statistics (flat black: 44 dB at 64², 21 dB at 256² with round 4's
default). ``encoder_norm="layer"`` / ``"local_group"`` compute the statistics per position.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vqct_tokenizer.tiling as tiling
from vqct_tokenizer.config import ConfigError, VQCTConfig
from vqct_tokenizer.interop import check_diffusers_compatible
from vqct_tokenizer.models.autoencoder import Encoder, LocalGroupNorm

from conftest import make_tokenizer, random_rgb, tiny_config

CONV_ONLY = {"attn_resolutions": (), "mid_attention": False}  # attention would see every position


@pytest.mark.parametrize("groups", [1, 4])
def test_local_group_norm_is_group_norm_applied_at_each_position(groups):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    local = LocalGroupNorm(groups, 8)
    reference = nn.GroupNorm(groups, 8, eps=1e-6)
    with torch.no_grad():
        for norm in (local, reference):
            norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
            norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    # every position as its own sample of shape (C, 1, 1): GroupNorm's statistics are then per position
    per_position = reference(x.permute(0, 2, 3, 1).reshape(-1, 8, 1, 1)).reshape(2, 5, 7, 8).permute(0, 3, 1, 2)
    torch.testing.assert_close(local(x), per_position, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(local(x.contiguous(memory_format=torch.channels_last)), per_position,
                               rtol=1e-5, atol=1e-5)
    assert local(x.to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("norm, local", [("group", False), ("layer", True), ("local_group", True)])
def test_a_cells_latent_depends_on_the_rest_of_the_image_only_with_group_norm(norm, local):
    """Changing pixels far outside a cell's receptive field leaves its latent alone with a
    per-position norm; GroupNorm's whole-image statistics carry the change everywhere."""
    torch.manual_seed(0)
    encoder = Encoder(tiny_config(encoder_norm=norm, **CONV_ONLY)).eval()
    x = torch.rand(1, 3, 96, 96) * 2 - 1
    y = x.clone()
    y[:, :, :, :24] = torch.rand(1, 3, 96, 24) * 2 - 1  # the left quarter, 48 px from the right third
    with torch.no_grad():
        far = (encoder(x) - encoder(y))[..., 18:]  # f = 4: cells 18+ start at pixel 72
    if local:
        assert far.abs().max() < 1e-5
    else:
        assert far.abs().max() > 1e-3


def test_with_a_per_position_norm_the_interior_of_a_flat_image_encodes_alike_at_any_size():
    torch.manual_seed(0)
    encoders = {n: Encoder(tiny_config(encoder_norm=n, **CONV_ONLY)).eval() for n in ("group", "layer")}
    flat = torch.full((1, 3, 256, 256), -0.6)
    gaps = {}
    with torch.no_grad():
        for name, encoder in encoders.items():
            small, large = encoder(flat[..., :96, :96]), encoder(flat)
            gaps[name] = (small[..., 12, 12] - large[..., 32, 32]).abs().max().item()
    assert gaps["layer"] < 1e-5
    assert gaps["group"] > 1e-3


def test_group_norm_weights_load_into_a_per_position_encoder():
    group = Encoder(tiny_config(encoder_norm="group"))
    layer = Encoder(tiny_config(encoder_norm="layer"))
    layer.load_state_dict(group.state_dict(), strict=True)
    assert any(isinstance(m, LocalGroupNorm) for m in layer.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in layer.modules())


def test_the_encoder_norm_is_saved_checked_and_defaults_to_group_for_older_configs():
    config = tiny_config(encoder_norm="layer")
    assert VQCTConfig.from_dict(config.to_dict()).encoder_norm == "layer"
    older = config.to_dict()
    del older["encoder_norm"]
    assert VQCTConfig.from_dict(older).encoder_norm == "group"
    # other tokens, another hash; GroupNorm models keep the hash they had before the field existed
    assert config.architecture_hash() != tiny_config().architecture_hash()
    assert VQCTConfig.from_dict(older).architecture_hash() == tiny_config().architecture_hash()
    with pytest.raises(ConfigError, match="encoder_norm must be one of"):
        tiny_config(encoder_norm="batch")
    with pytest.raises(ValueError, match="encoder_norm='layer'"):
        check_diffusers_compatible(config)


def test_tiled_encoding_of_a_per_position_encoder_equals_the_whole_image_and_needs_no_sweep(monkeypatch):
    tok = make_tokenizer(encoder_norm="layer", **CONV_ONLY)
    image = random_rgb(136, 200, seed=1)
    tok.tile_size = None
    whole = tok.encode(image, resize=False)
    stages: list[int] = []
    encoder_stages = tiling._encoder_stages
    monkeypatch.setattr(tiling, "_encoder_stages", lambda model: stages.append(1) or encoder_stages(model))
    sweeps: list[int] = []
    close = tiling._WholeImageNorms.close_sweep
    monkeypatch.setattr(tiling._WholeImageNorms, "close_sweep", lambda self: sweeps.append(1) or close(self))
    tok.tile_size = 64
    tiled = tok.encode(image, resize=False)
    assert stages, "the image was not tiled"
    assert not sweeps  # no whole-image statistics to gather
    assert (whole == tiled).all(-1).float().mean() >= 0.995
