"""Round 6's tools against the latent-PR ceiling: the spread hinge on the batch latents' participation
ratio (losses.spread_loss) and the trainable linear map over a frozen word codebook
(codebook.remap=linear, warm_start.FixedCodebook). Tiny configs, CPU, seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from test_colour import exported_tiny  # noqa: F401  (fixture)
from test_training import image_dir, tiny_cfg, tiny_prior  # noqa: F401  (fixtures)
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.evaluation.geometry import participation_ratio
from vqct_tokenizer.training.checkpoint import find_latest, load_checkpoint
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.export import export
from vqct_tokenizer.training.losses import spread_loss
from vqct_tokenizer.training.model import build_model
from vqct_tokenizer.training.trainer import train


def _latent(cells: torch.Tensor, groups: int, b: int = 2) -> torch.Tensor:
    """(P, G·D) cells -> (b, G·D, h, w) with P = b·h·w (h = w)."""
    p, c = cells.shape
    side = int((p // b) ** 0.5)
    return cells.reshape(b, side, side, c).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("groups", [1, 2])
def test_spread_loss_is_the_pr_hinge_per_group(groups):
    g = torch.Generator().manual_seed(0)
    d, floor = 16, 8.0
    line = torch.randn(128, 1, generator=g) * torch.randn(1, groups * d, generator=g)   # every cell on one line
    isotropic = torch.randn(128, groups * d, generator=g)                                # PR about d
    assert spread_loss(_latent(line, groups), groups, floor).item() == pytest.approx(groups * (1 - 1 / floor), rel=1e-4)
    assert spread_loss(_latent(isotropic, groups), groups, floor).item() == 0.0
    # between the two: the hinge is 1/PR − 1/floor, PR as evaluation/geometry.py measures it
    mixed = line + 0.3 * isotropic
    expected = sum(max(0.0, 1 / participation_ratio(mixed[:, i * d:(i + 1) * d]) - 1 / floor) for i in range(groups))
    assert spread_loss(_latent(mixed, groups), groups, floor).item() == pytest.approx(expected, rel=1e-3)


def test_descending_the_spread_loss_raises_the_participation_ratio():
    g = torch.Generator().manual_seed(1)
    bunched = torch.randn(128, 1, generator=g) * torch.randn(1, 16, generator=g) + 0.05 * torch.randn(128, 16, generator=g)
    z = _latent(bunched, 1).requires_grad_(True)
    before = participation_ratio(bunched)
    opt = torch.optim.Adam([z], lr=0.05)  # the loss is scale-free: Adam's steps do not depend on |z|
    for _ in range(100):
        opt.zero_grad()
        spread_loss(z, 1, 8.0).backward()
        opt.step()
    after = participation_ratio(z.detach().permute(0, 2, 3, 1).reshape(-1, 16))
    assert before < 1.1 and after >= 8.0, (before, after)  # the hinge stops at the floor, not before


@pytest.mark.parametrize("override, message", [
    ("codebook.remap=linear", "codebook.source=fixed"),
    ("codebook.remap=mlp", "codebook.remap must be one of"),
    ("loss.spread_weight=-1", "spread_weight must be a number >= 0"),
    ("loss.spread_floor=1", "spread_floor must be a participation ratio > 1"),
])
def test_spread_and_remap_options_are_checked(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_remapped_warm_start_begins_at_the_start_codes_and_exports_the_moved_ones(exported_tiny, tiny_prior,  # noqa: F811
                                                                                  image_dir, tmp_path):  # noqa: F811
    start = VQCTTokenizer.from_pretrained(exported_tiny)
    cfg = tiny_cfg(tmp_path / "ft", tiny_prior, image_dir, "optim.steps=3", "codebook.cosine=true",
                   f"run.init_from={exported_tiny}", "codebook.source=fixed", "codebook.remap=linear",
                   "loss.spread_weight=1.0", "optim.lr=1e-2")
    model = build_model(cfg).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():  # W starts at the identity: the same codes, the same tokens
        assert torch.allclose(model.codebook(), start.codebook, atol=1e-6)
        assert torch.equal(model.encode_ids(x), start.model.encode_ids(x, start.codebook))
    assert [n for n, p in model.codebook_source.named_parameters() if p.requires_grad] == ["remap"]
    train(cfg)
    state = load_checkpoint(find_latest(tmp_path / "ft"))["model"]
    assert torch.equal(state["codebook_source.codes"], start.codebook)  # the word codes themselves stay frozen
    remap = state["codebook_source.remap"]
    assert not torch.equal(remap, torch.eye(remap.shape[0])), "three steps left the linear map at the identity"
    export(find_latest(tmp_path / "ft"), tmp_path / "tok")
    tuned = VQCTTokenizer.from_pretrained(tmp_path / "tok")
    # export bakes codes @ W, renormalised for the cosine lookup: every row is still its word's code
    assert torch.allclose(tuned.codebook, F.normalize(start.codebook @ remap, dim=1), atol=1e-5)
    assert tuned.vocab == start.vocab and tuned.config.extra["training"]["remap"] == "linear"
