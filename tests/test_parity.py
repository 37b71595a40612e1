"""Parity with an independent implementation: our encoder/decoder mapped into diffusers' VQModel.

The key mapping itself is tested without diffusers; the numerical parity needs it (the optional
``[interop]`` extra: ``pip install 'vqct-tokenizer[interop]'``) and is skipped otherwise.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import make_tokenizer, require
from vqct_tokenizer.interop import check_diffusers_compatible, diffusers_state_dict, diffusers_vqmodel_config

ATOL = 1e-5


def test_every_weight_has_a_diffusers_name_and_attention_becomes_linear():
    tok = make_tokenizer()  # attention at the 8x8 level and in the mid block
    state = tok.model.state_dict()
    mapped = diffusers_state_dict(state, tok.config, tok.codebook)
    assert len(mapped) == len(state) + 1  # + quantize.embedding.weight
    assert mapped["encoder.mid_block.attentions.0.to_q.weight"].shape == (32, 32)
    assert "decoder.up_blocks.0.attentions.1.to_out.0.bias" in mapped  # our decoder.up[2]: 8x8, 2 blocks
    assert "encoder.down_blocks.0.downsamplers.0.conv.weight" in mapped
    assert "decoder.up_blocks.2.resnets.0.conv_shortcut.weight" in mapped
    cfg = diffusers_vqmodel_config(tok.config)
    assert cfg["down_block_types"] == ("DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D")
    assert cfg["up_block_types"] == ("AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D")


def test_a_first_level_wider_than_ch_is_refused():
    with pytest.raises(ValueError, match="ch_mult"):
        check_diffusers_compatible(make_tokenizer(ch_mult=(2, 2)).config)


def test_importing_interop_does_not_import_diffusers():
    code = "import sys, vqct_tokenizer, vqct_tokenizer.interop; print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _parity(tok, batch: int = 2):
    from vqct_tokenizer.interop import to_diffusers_vqmodel

    vq = to_diffusers_vqmodel(tok)
    res = tok.config.resolution
    x = torch.rand(batch, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1
    m, cb = tok.model, tok.codebook
    with torch.inference_mode():
        lat, lat_d = m.encode_latent(x), vq.encode(x).latents
        ids = m.quantizer.encode(lat, cb)
        z_q = m.quantizer.lookup(ids, cb)
        dec, dec_d = m.decode_latent(z_q), vq.decode(z_q, force_not_quantize=True).sample
    return vq, x, lat, lat_d, ids, m.quantizer.encode(lat_d, cb), dec, dec_d


@pytest.mark.parametrize("attn_resolutions", [(), (8,)], ids=["attn-mid-only", "attn-8x8-and-mid"])
def test_diffusers_vqmodel_gives_the_same_latents_tokens_and_images(attn_resolutions):
    require("diffusers", "interop")
    tok = make_tokenizer(attn_resolutions=attn_resolutions)
    _, _, lat, lat_d, ids, ids_d, dec, dec_d = _parity(tok)
    assert lat.shape == lat_d.shape and dec.shape == dec_d.shape
    assert torch.allclose(lat, lat_d, atol=ATOL), f"encoder latent max |diff| {(lat - lat_d).abs().max():.3g}"
    assert torch.allclose(dec, dec_d, atol=ATOL), f"decoder output max |diff| {(dec - dec_d).abs().max():.3g}"
    # tokens are an argmin over distances: allow a rare near-tie to flip (at most 1 % of ids)
    assert (ids == ids_d).float().mean() >= 0.99


def test_a_plain_vq_codebook_carries_over_to_diffusers_quantizer():
    require("diffusers", "interop")
    tok = make_tokenizer(quantizer="vq", num_codes=24, num_adjectives=0, num_nouns=0)
    vq, x, lat, _, ids, _, _, _ = _parity(tok)
    with torch.inference_mode():
        z_q, _, (_, _, idx) = vq.quantize(lat)
        image = vq.decode(lat).sample  # diffusers quantizes with the mapped codebook itself
    idx = idx.reshape(ids.shape[:-1])
    same = idx == ids[..., 0]  # diffusers' cdist and our expanded distance may break a near tie apart
    assert same.float().mean() >= 0.99
    assert torch.allclose(z_q[same.unsqueeze(1).expand_as(z_q)],
                          tok.model.quantizer.lookup(ids, tok.codebook)[same.unsqueeze(1).expand_as(z_q)], atol=ATOL)
    if same.all():
        assert torch.allclose(image, tok.model.decode_ids(ids, tok.codebook), atol=ATOL)
