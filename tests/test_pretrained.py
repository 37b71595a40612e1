"""The shipped weights: every model loads completely, and the default reconstructs plain inputs.

The bounds on plain inputs are measured values of the shipped default (see README "Pretrained
models"), rounded down by about 1 dB: a retrained default that does worse on flat colours,
gradients or checkerboards fails here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqct_tokenizer import VQCTConfig, VQCTTokenizer
from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped, shipped_names
from vqct_tokenizer.evaluation.plain_inputs import plain_images, psnr_uint8

SIZE = 256


# Measured on the shipped vqct-open-f8 (benchmarks/plain_inputs.py -> benchmarks/results/plain_inputs.json),
# rounded down by 1-1.5 dB. Round 5's per-position encoder norm and dead-leaves samples took black, white,
# grey and red past 30 dB (round 4: 21.3, 16.6, 26.2, 17.3). Round 6's latent spread traded white, grey,
# red and olive for magenta, blue, teal and the hue ramp. Round 8's plain patterns and low-pass L1 took
# olive (23.4 -> 37.3), magenta (22.2 -> 30.7), white, blue, the gradient and the ramp up, and black,
# grey, red and green down. Round 10's decoder fine-tune (same tokens) took blue (25.2 -> 30.6), grey
# (30.8 -> 33.6), red (24.0 -> 25.8) and the gradient up, and white (55.0 -> 41.1), magenta (30.7 -> 27.9),
# yellow and teal down. The issue's target is 30 dB for all of them; eight miss it (README "Latent
# collapse and colour"): these bounds guard against getting worse, not the target. Round 8's weights fail
# three of them (grey, red and blue).
MIN_PSNR = {"flat-black": 30.0, "flat-white": 40.0, "flat-grey": 32.0, "flat-red": 24.5, "flat-green": 23.0,
            "flat-blue": 29.0, "flat-teal": 27.0, "flat-olive": 34.5, "flat-yellow": 24.5, "flat-magenta": 26.5,
            "gradient": 28.5, "colour-ramp": 26.5, "checkerboard": 19.0}


# Latent PR per group of the shipped default on the random-colour blocks below: 6.77 / 6.97 measured
# (round 6's: 5.99 / 6.09; round 5's: 3.96 / 4.04, which fail this bound; round 4's: 3.99 / 4.09; round 3's: 3.84 / 4.18;
# round 2's collapsed default: 1.00 / 1.00).
MIN_LATENT_PR = 5.0


@pytest.fixture(scope="module")
def default_tokenizer() -> VQCTTokenizer:
    if find_shipped(DEFAULT_MODEL) is None:
        pytest.skip(f"the shipped default {DEFAULT_MODEL!r} is not in this checkout")
    torch.set_num_threads(2)
    return VQCTTokenizer.from_pretrained(DEFAULT_MODEL)


@pytest.mark.parametrize("name", shipped_names())
def test_shipped_model_loads_every_weight_and_round_trips(name: str) -> None:
    from safetensors.torch import load_file

    tok = VQCTTokenizer.from_pretrained(name)
    stored = load_file(str(find_shipped(name) / "model.safetensors"))
    own = tok.state_dict()
    assert set(stored) == set(own), "weights file and model disagree on keys"
    for key, value in stored.items():
        assert torch.equal(own[key].float(), value.float()), key
    f = tok.downsample_factor
    tokens = tok.encode(torch.rand(3, 4 * f, 4 * f), resize=False)
    assert tokens.shape == (4, 4, tok.tokens_per_cell)
    assert tok.decode(tokens).size == (4 * f, 4 * f)
    assert tok.encode(torch.rand(3, 4 * f, 4 * f)).shape[0] == tok.config.resolution // f  # resized


@pytest.mark.parametrize("kind", sorted(plain_images(SIZE)))
def test_default_reconstructs_plain_inputs(kind: str, default_tokenizer: VQCTTokenizer) -> None:
    image = plain_images(SIZE)[kind]
    recon = default_tokenizer.reconstruct(image, resize=False, output_type="np", decode_precision="fp32")  # as measured
    assert recon.shape == image.shape
    bound = MIN_PSNR[kind]
    assert psnr_uint8(image, recon) >= bound, f"{kind}: PSNR {psnr_uint8(image, recon):.2f} dB < {bound} dB"


def test_default_latents_are_not_collapsed(default_tokenizer: VQCTTokenizer) -> None:
    """Round 2's default had latent PR 1.00 per group (README "Latent collapse"); the shipped default
    has about 10 on open test photos (rounds 6 and 8; round 5: 6.2-6.7). On random-colour blocks (no data
    needed) it keeps several directions in both groups."""
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(4, 3, 8, 8, generator=g).repeat_interleave(32, 2).repeat_interleave(32, 3)  # 32-px blocks
    x = (blocks + 0.1 * torch.rand(blocks.shape, generator=g)).clamp(0, 1) * 2 - 1
    for name, pr in _latent_prs(default_tokenizer, x).items():
        assert pr >= MIN_LATENT_PR, f"{name}: latent PR {pr:.2f}"


def _latent_prs(tok: VQCTTokenizer, x: torch.Tensor) -> dict[str, float]:
    """Centred participation ratio of the encoder latents of ``x`` (B, 3, H, W in [-1, 1]) per code group."""
    from vqct_tokenizer.evaluation.geometry import LatentGeometry

    geometry = LatentGeometry(tok.config)
    with torch.no_grad():
        geometry.update(tok.model.encode_latent(x))
    return {name: group["latent_pr"] for name, group in geometry.compute().items()}


# Issue 20's bar: the default's latents span at least 8 directions per group (centred participation
# ratio) on open test photos at 256². Measured on the first 8 photos: 10.01 / 9.79 (adjectives / nouns;
# round 6: 9.82 / 9.77).
# Round 5's weights, with their frozen codebook, gave 6.50 / 5.84 and fail it
# (docs/BENCHMARKS.md "Past the ceiling").
MIN_PHOTO_LATENT_PR = 8.0


def test_default_latents_span_eight_directions_on_photos(default_tokenizer: VQCTTokenizer) -> None:
    from conftest import shared_data_root

    listing = shared_data_root() / "open" / "test.txt"
    if not listing.is_file():
        pytest.skip(f"open-domain photos not found at {listing} (set VQCT_DATA)")
    photos = torch.stack([default_tokenizer.preprocess(str(listing.parent / line))[0][0]
                          for line in listing.read_text().split()[:8]])      # (8, 3, 256, 256)
    for name, pr in _latent_prs(default_tokenizer, photos).items():
        assert pr >= MIN_PHOTO_LATENT_PR, f"{name}: latent PR {pr:.2f} on photos"


# The share of red-green chroma (Cr) the shipped default keeps on the first 8 open test photos at
# native size: 0.964 measured (Cb 0.951; round 8's 0.928, round 6's 0.889). Round 5's weights kept 0.804 and fail this bound, round 4's
# 0.557, round 3's, before the colour stage, 0.39 (Cb 0.67).
MIN_CR_SLOPE = 0.85


def test_default_keeps_red_green_chroma_on_photos(default_tokenizer: VQCTTokenizer) -> None:
    from PIL import Image

    from conftest import shared_data_root
    from vqct_tokenizer.evaluation.colour import ChromaMeter

    listing = shared_data_root() / "open" / "test.txt"
    if not listing.is_file():
        pytest.skip(f"open-domain photos not found at {listing} (set VQCT_DATA)")
    meter = ChromaMeter()
    for line in listing.read_text().split()[:8]:
        image = np.asarray(Image.open(listing.parent / line).convert("RGB"))
        image = image[: image.shape[0] // 8 * 8, : image.shape[1] // 8 * 8]
        meter.update(image, default_tokenizer.reconstruct(image, resize=False, output_type="np"))
    slope = meter.result()["slope"]
    assert slope["Cr"] >= MIN_CR_SLOPE, f"Cr slope {slope['Cr']:.3f}: red-green chroma lost (round 3 kept 0.39)"


def test_default_is_general_purpose() -> None:
    """The default is the open-domain model, fully convolutional: any size encodes natively."""
    if find_shipped(DEFAULT_MODEL) is None:
        pytest.skip(f"the shipped default {DEFAULT_MODEL!r} is not in this checkout")
    tok = VQCTTokenizer.from_pretrained(DEFAULT_MODEL)
    assert DEFAULT_MODEL == "vqct-open-f8"
    assert tok.config.attn_resolutions == () and not tok.config.mid_attention
    assert tok.downsample_factor == 8 and tok.config.resolution == 256
    tokens = tok.encode(torch.rand(3, 40, 72), resize=False)
    assert tokens.shape == (5, 9, 3)


def test_configs_that_say_dual_load_as_vqct_and_keep_their_hash(tmp_path) -> None:
    """The VQCT quantizer was called "dual" before; the shipped weights' config.json and older exports
    say so. They load under the one name, and their architecture hash (in token files) is unchanged."""
    cfg = VQCTConfig(num_adjectives=5, num_nouns=7)
    assert cfg.quantizer == "vqct"
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**cfg.to_dict(), "quantizer": "dual"}))
    legacy = VQCTConfig.load(path)
    assert legacy.to_dict() == cfg.to_dict()
    assert legacy.architecture_hash() == cfg.architecture_hash() == "3f0a5d3f9b6496b9"  # computed under "dual"
    for name in shipped_names():
        folder = find_shipped(name)
        if folder is not None:
            raw = json.loads((folder / "config.json").read_text())["quantizer"]
            assert VQCTConfig.load(folder / "config.json").quantizer == {"dual": "vqct"}.get(raw, raw)
