"""Colour in training and evaluation: chroma jitter, the colour-balanced L1, the chroma meter, and
warm starts around a frozen codebook (tiny configs, CPU, seconds)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from test_training import image_dir, tiny_cfg, tiny_prior  # noqa: F401  (fixtures)
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.errors import ConfigError
from vqct_tokenizer.evaluation.colour import ChromaMeter
from vqct_tokenizer.training.checkpoint import find_latest, load_checkpoint
from vqct_tokenizer.training.colour import ColourBalancedL1, colour_axes, jitter_chroma
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.data import ImageDataset
from vqct_tokenizer.training.export import export
from vqct_tokenizer.training.model import build_model
from vqct_tokenizer.training.trainer import train

LUMA = torch.tensor([0.299, 0.587, 0.114])


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("c,chw->hw", LUMA, x)


def test_chroma_jitter_keeps_luminance_and_turns_hue():
    x = 0.5 + 0.15 * torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))  # far from clipping
    out = jitter_chroma(x, random.Random(3))
    assert torch.allclose(_luma(out), _luma(x), atol=1e-5)
    assert (out - x).abs().max() > 0.01
    # the same seed, the same jitter: samples are functions of their augmentation seed
    assert torch.equal(out, jitter_chroma(x, random.Random(3)))
    # a saturation of 0 leaves grey
    grey = jitter_chroma(x, random.Random(3), saturation=(0.0, 0.0))
    assert torch.allclose(grey, _luma(x).expand(3, -1, -1), atol=1e-5)


def test_colour_balanced_l1_weights_the_rare_axis():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(3, 3, generator=g))[0].T   # rows: orthonormal axes
    stds = torch.tensor([0.8, 0.2, 0.1])
    pixels = (torch.randn(20000, 3, generator=g) * stds) @ basis
    axes, measured = colour_axes(pixels)
    assert torch.allclose(measured, stds, rtol=0.05)
    assert torch.allclose((axes * basis).sum(1).abs(), torch.ones(3), atol=0.01)  # each axis found, up to sign
    loss = ColourBalancedL1(axes, measured, exponent=1.0)
    x = torch.zeros(1, 3, 2, 2)
    along = [(loss(x, x + 0.1 * axes[i].view(1, 3, 1, 1))).item() for i in range(3)]
    # an error along the rarest axis costs std_0 / std_2 (about 8x) what the same error along luminance costs
    assert along[2] / along[0] == pytest.approx((measured[0] / measured[2]).item(), rel=1e-4)
    flat = ColourBalancedL1(axes, measured, exponent=0.0)
    assert flat(x, x + 0.1 * axes[2].view(1, 3, 1, 1)).item() == pytest.approx(flat(x, x + 0.1 * axes[0].view(1, 3, 1, 1)).item())


@pytest.mark.parametrize("exponent", [0.5, 1.0])
def test_colour_balance_grey_norm_charges_a_grey_error_as_rgb_l1(exponent):
    axes, stds = colour_axes(_photo_like_pixels())
    x = torch.zeros(1, 3, 2, 2)
    grey = x + 0.1
    red_green = x + torch.tensor([0.1, -0.1, 0.0]).view(1, 3, 1, 1)
    axes_norm = ColourBalancedL1(axes, stds, exponent)
    grey_norm = ColourBalancedL1(axes, stds, exponent, norm="grey")
    rgb_l1 = (grey - x).abs().mean().item()
    # the mean over axes charges a grey error about 1/sqrt(3) of RGB L1's; "grey" charges exactly RGB L1's
    assert axes_norm(x, grey).item() == pytest.approx(rgb_l1 / 3 ** 0.5, rel=0.05)
    assert grey_norm(x, grey).item() == pytest.approx(rgb_l1, rel=1e-5)
    # a uniform rescale: the chroma axes keep their weight relative to luminance
    ratio = grey_norm(x, red_green).item() / axes_norm(x, red_green).item()
    assert ratio == pytest.approx(grey_norm(x, grey).item() / axes_norm(x, grey).item(), rel=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        ColourBalancedL1(axes, stds, exponent, norm="rgb")


def _photo_like_pixels() -> torch.Tensor:
    """Pixels whose main axis is near grey, as in photos: luminance std 0.7, chroma 0.25 and 0.1."""
    g = torch.Generator().manual_seed(1)
    lum = torch.tensor([1.0, 1.0, 1.0]) / 3 ** 0.5
    c1 = torch.tensor([1.0, 0.0, -1.0]) / 2 ** 0.5
    c2 = torch.linalg.cross(lum, c1)
    return torch.randn(20000, 3, generator=g) * torch.tensor([0.7, 0.25, 0.1]) @ torch.stack([lum, c1, c2])


def test_chroma_meter_reads_halved_red_green_chroma():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 216, size=(16, 16, 3)).astype(np.uint8)
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = image.reshape(-1, 3) @ m.T
    ycc[:, 2] *= 0.5
    halved = (ycc @ np.linalg.inv(m).T).reshape(image.shape)
    meter = ChromaMeter()
    meter.update(image, np.clip(halved, 0, 255))
    slope = meter.result()["slope"]
    assert slope["Cr"] == pytest.approx(0.5, abs=0.02)
    assert slope["Cb"] == pytest.approx(1.0, abs=0.02) and slope["Y"] == pytest.approx(1.0, abs=0.02)
    same = ChromaMeter()
    same.update(image, image)
    assert same.result()["slope"] == {"Y": 1.0, "Cb": 1.0, "Cr": 1.0}
    with pytest.raises(ValueError, match="no images"):
        ChromaMeter().result()


def test_hue_jitter_in_the_dataset_is_off_by_default_and_seeded(image_dir):  # noqa: F811
    plain = ImageDataset(image_dir, 16, "center")
    jittered = ImageDataset(image_dir, 16, "center", hue_jitter=1.0, saturation=(1.0, 1.0))
    a, b = plain[(0, 7)], jittered[(0, 7)]
    assert not torch.equal(a, b)
    assert torch.equal(b, jittered[(0, 7)])
    with pytest.raises(ValueError, match="hue_jitter"):
        ImageDataset(image_dir, 16, hue_jitter=1.5)


@pytest.mark.parametrize("override, message", [
    ("loss.colour_balance=2", "colour_balance must be a number in"),
    ("loss.colour_balance_norm=rgb", "colour_balance_norm must be"),
    ("codebook.source=fixed", "run.init_from"),
])
def test_colour_and_warm_start_options_are_checked(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])
    with pytest.raises(ValueError, match="weights an L1"):
        load_config(None, ["loss.colour_balance=0.5", "loss.recon=l2"])


@pytest.fixture(scope="module")
def exported_tiny(tiny_prior, image_dir, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("warm")
    train(tiny_cfg(tmp / "run", tiny_prior, image_dir, "optim.steps=2", "codebook.cosine=true"))
    export(find_latest(tmp / "run"), tmp / "tok")
    return tmp / "tok"


def test_warm_start_begins_at_the_exported_tokenizer_and_keeps_its_codebook(exported_tiny, tiny_prior, image_dir,  # noqa: F811
                                                                             tmp_path):
    start = VQCTTokenizer.from_pretrained(exported_tiny)
    cfg = tiny_cfg(tmp_path / "ft", tiny_prior, image_dir, "optim.steps=3", "codebook.cosine=true",
                   f"run.init_from={exported_tiny}", "codebook.source=fixed", "loss.colour_balance=1.0",
                   "data.hue_jitter=0.5")
    model = build_model(cfg).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.encode_ids(x), start.model.encode_ids(x, start.codebook))
    assert not any(p.requires_grad for p in model.codebook_source.parameters())
    train(cfg)
    state = load_checkpoint(find_latest(tmp_path / "ft"))
    assert torch.equal(state["model"]["codebook_source.codes"], start.codebook)
    moved = [k for k, v in start.model.state_dict().items() if not torch.equal(state["model"][f"autoencoder.{k}"], v)]
    assert moved, "three steps of fine-tuning changed no weight"
    export(find_latest(tmp_path / "ft"), tmp_path / "tok")
    tuned = VQCTTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(tuned.codebook, start.codebook) and tuned.vocab == start.vocab
    assert tuned.config.extra["training"]["init_from"] == str(exported_tiny)


def test_warm_start_names_an_architecture_mismatch(exported_tiny, tiny_prior, image_dir, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path / "ft", tiny_prior, image_dir, "codebook.cosine=true", "model.z_channels=16",
                   f"run.init_from={exported_tiny}", "codebook.source=fixed")
    with pytest.raises(ConfigError, match="z_channels: config 16"):
        build_model(cfg)


def test_a_warm_start_may_switch_the_encoder_to_a_per_position_norm(exported_tiny, tiny_prior, image_dir,  # noqa: F811
                                                                      tmp_path):
    """The norms' weights have GroupNorm's names and shapes, so round 4's weights start a
    ``model.encoder_norm=layer`` run; the export then says which norm its encoder uses."""
    cfg = tiny_cfg(tmp_path / "ft", tiny_prior, image_dir, "optim.steps=1", "codebook.cosine=true",
                   f"run.init_from={exported_tiny}", "codebook.source=fixed", "model.encoder_norm=layer")
    start = VQCTTokenizer.from_pretrained(exported_tiny)
    model = build_model(cfg)
    assert start.config.encoder_norm == "group" and model.config.encoder_norm == "layer"
    assert all(torch.equal(v, start.model.state_dict()[k]) for k, v in model.autoencoder.state_dict().items())
    train(cfg)
    export(find_latest(tmp_path / "ft"), tmp_path / "tok")
    assert VQCTTokenizer.from_pretrained(tmp_path / "tok").config.encoder_norm == "layer"
