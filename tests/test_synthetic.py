"""Synthetic training images (training/synthetic.py): dead leaves and plain patterns, and their
switches, data.synthetic and data.synthetic_plain."""

from __future__ import annotations

import random

import numpy as np

import pytest
import torch

from test_training import image_dir  # noqa: F401  (fixture)
from vqct_tokenizer.training.data import ImageDataset
from vqct_tokenizer.training.synthetic import PLAIN_KINDS, dead_leaves, plain_batch, plain_pattern


def test_dead_leaves_are_seeded_in_range_and_mostly_flat_with_many_colours():
    a, b = dead_leaves(random.Random(3), 64), dead_leaves(random.Random(3), 64)
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, dead_leaves(random.Random(4), 64))
    assert 0.0 <= a.min() and a.max() <= 1.0
    # flat regions: most pixels equal their right-hand neighbour; edges exist too
    same = (a[:, :, 1:] == a[:, :, :-1]).all(0).float().mean()
    assert 0.6 < same < 1.0
    assert len(torch.unique(a.reshape(3, -1).T, dim=0)) > 10


def test_dead_leaves_colours_reach_saturation_and_the_extremes():
    pixels = torch.cat([dead_leaves(random.Random(s), 32).reshape(3, -1).T for s in range(40)])
    spread = pixels.max(1).values - pixels.min(1).values  # 1 for a fully saturated colour
    assert (spread > 0.8).float().mean() > 0.1
    # the arcsine law puts 0.9 % of colours within 0.1 of black and as many of white (0.205 ** 3)
    assert (pixels.max(1).values < 0.1).float().mean() > 0.001
    assert (pixels.min(1).values > 0.9).float().mean() > 0.001


def test_dead_leaves_refuses_bad_arguments():
    with pytest.raises(ValueError, match="r_min <= r_max"):
        dead_leaves(random.Random(0), 16, r_min=0.5, r_max=0.1)


def test_the_dataset_mixes_in_dead_leaves_only_when_asked(image_dir):  # noqa: F811
    plain = ImageDataset(image_dir, 16, "center")
    assert plain.synthetic == 0.0
    always = ImageDataset(image_dir, 16, "center", synthetic=1.0)
    x = always[(0, 7)]
    assert torch.equal(x, dead_leaves(_after_one_draw(7), 16) * 2 - 1)
    assert not torch.equal(x, plain[(0, 7)])
    half = ImageDataset(image_dir, 16, "center", synthetic=0.5)
    kinds = [torch.equal(half[(0, s)], plain[(0, s)]) for s in range(40)]
    assert 5 < sum(kinds) < 35  # some photos, some synthetic
    with pytest.raises(ValueError, match="data.synthetic"):
        ImageDataset(image_dir, 16, synthetic=1.5)


def _after_one_draw(seed: int) -> random.Random:
    rng = random.Random(seed)
    rng.random()  # the draw that chose a synthetic sample
    return rng


@pytest.mark.parametrize("kind", PLAIN_KINDS)
def test_plain_patterns_are_seeded_in_range_and_of_their_kind(kind):
    a, b = plain_pattern(random.Random(5), 48, kind), plain_pattern(random.Random(5), 48, kind)
    assert a.shape == (3, 48, 48) and a.dtype == torch.float32 and torch.equal(a, b)
    assert 0.0 <= a.min() and a.max() <= 1.0
    colours = torch.unique(a.reshape(3, -1).T, dim=0)
    if kind == "flat":
        assert len(colours) == 1
    elif kind == "checker":
        assert len(colours) == 2
    else:  # smooth: many colours, and neighbours close
        assert len(colours) > 20
        assert (a[:, :, 1:] - a[:, :, :-1]).abs().max() < 0.25
        assert (a[:, 1:] - a[:, :-1]).abs().max() < 0.25


def test_plain_patterns_draw_every_kind_and_saturated_hues():
    draws = [plain_pattern(random.Random(s), 16) for s in range(80)]
    flat = sum(len(torch.unique(d.reshape(3, -1).T, dim=0)) == 1 for d in draws)
    two = sum(len(torch.unique(d.reshape(3, -1).T, dim=0)) == 2 for d in draws)
    assert 8 < flat < 35 and 8 < two < 35  # a quarter each, give or take
    ramp = plain_pattern(random.Random(1), 64, "hue-ramp").reshape(3, -1).T
    assert (ramp.max(1).values - ramp.min(1).values).max() > 0.45  # saturation >= 0.5 at value >= 0.5
    with pytest.raises(ValueError, match="kind must be one of"):
        plain_pattern(random.Random(0), 16, "stars")


def test_plain_batches_are_seeded_by_their_seed_alone_and_of_the_asked_size():
    a, b = plain_batch(11, 40, 3), plain_batch(11, 40, 3)
    assert a.shape == (3, 3, 40, 40) and torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(a, plain_batch(12, 40, 3))
    rng = random.Random(11)  # the batch is plain_pattern's draws, in order, from one generator
    assert torch.equal(a[1], (plain_pattern(rng, 40), plain_pattern(rng, 40))[1])


def test_the_dataset_mixes_plain_patterns_into_the_synthetic_share_only_when_asked(image_dir):  # noqa: F811
    leaves = ImageDataset(image_dir, 16, "center", synthetic=1.0)
    plain = ImageDataset(image_dir, 16, "center", synthetic=1.0, synthetic_plain=1.0)
    rng = _after_one_draw(7)
    rng.random()  # the draw that chose a plain pattern
    assert torch.equal(plain[(0, 7)], plain_pattern(rng, 16) * 2 - 1)
    assert not torch.equal(plain[(0, 7)], leaves[(0, 7)])
    mixed = ImageDataset(image_dir, 16, "center", synthetic=1.0, synthetic_plain=0.5)
    is_leaves = [torch.equal(mixed[(0, s)], _leaves_after_two_draws(s)) for s in range(40)]
    assert 5 < sum(is_leaves) < 35
    with pytest.raises(ValueError, match="data.synthetic_plain"):
        ImageDataset(image_dir, 16, synthetic=0.5, synthetic_plain=-0.1)


def _leaves_after_two_draws(seed: int) -> torch.Tensor:
    rng = _after_one_draw(seed)
    rng.random()  # the draw that chose dead leaves over a plain pattern
    return dead_leaves(rng, 16) * 2 - 1


def test_random_flat_colours_are_fixed_saturated_and_scored_per_colour():
    from vqct_tokenizer.evaluation.plain_inputs import random_flat_colours, score_random_flats

    from conftest import make_tokenizer

    colours = random_flat_colours(48)
    assert colours == random_flat_colours(48) and colours != random_flat_colours(48, seed=1)
    assert all(0 <= v <= 255 for c in colours for v in c)
    assert sum(max(c) - min(c) > 200 for c in colours) > 5  # the arcsine law: saturated colours are common
    score = score_random_flats(make_tokenizer(), size=32, count=6)
    assert score["count"] == 6 and score["min"] <= score["p10"] <= score["median"]
    assert 0.0 <= score["share_30db"] <= 1.0 and score["mean_shift"] > 0  # an untrained model is off


def test_colour_error_split_separates_a_colour_map_from_scatter():
    from vqct_tokenizer.evaluation.plain_inputs import _colour_error_split, random_flat_colours

    colours = np.array(random_flat_colours(48), dtype=np.float64)
    contracted = 0.8 * colours + 0.2 * 128  # a pure contraction towards grey: an affine map undoes it
    split = _colour_error_split(colours, contracted)
    assert split["affine_residual"] < 1e-6 and split["chroma_error"] > 5
    grey_shift = colours + 10.0  # +10 on every channel: all luma, no chroma
    split = _colour_error_split(colours, grey_shift)
    assert abs(split["luma_error"] - 10.0) < 1e-6 and split["chroma_error"] < 1e-6
    scatter = colours + np.random.default_rng(0).normal(0, 10, colours.shape)  # per-colour noise stays
    split = _colour_error_split(colours, scatter)
    assert split["affine_residual"] > 5


def test_flat_interior_rings_count_cells_from_the_nearest_edge():
    from conftest import benchmark_module

    bench = benchmark_module("flat_interiors")
    rings = bench.ring_of_cells(6)
    assert rings[0].tolist() == [0, 0, 0, 0, 0, 0] and rings[2].tolist() == [0, 1, 2, 2, 1, 0]
    assert bench.ring_of_cells(40).max() == bench.MAX_RING  # deeper cells are pooled
    a = np.zeros((48, 48, 3), np.uint8)
    b = a.copy()
    b[16:24, 24:32] = 10  # one cell of ring 2 wrong by 10 levels; rings 0 and 1 exact
    mse = bench.ring_mse(a, b)
    assert mse[0] == mse[1] == 0.0 and mse[2] == 100.0 / 4  # 4 cells in ring 2 of a 6x6 grid
