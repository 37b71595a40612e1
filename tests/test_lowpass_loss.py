"""The low-pass reconstruction term (loss.lowpass_weight): it charges regions' mean colours only."""

from __future__ import annotations

import pytest
import torch

from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.losses import lowpass_loss, reconstruction_loss


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return reconstruction_loss(a, b, "l1")


def test_a_colour_shift_costs_its_size_and_zero_mean_detail_within_cells_costs_nothing():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    shift = torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)
    torch.testing.assert_close(lowpass_loss(x, x + shift, 8, l1), shift.abs().mean())
    # a checkerboard of +-0.3 inside every 8x8 cell: L1 sees 0.3, the pooled images are equal
    checker = ((torch.arange(32)[:, None] + torch.arange(40)[None]) % 2 * 2 - 1).float() * 0.3
    assert l1(x, x + checker).item() == pytest.approx(0.3)
    assert lowpass_loss(x, x + checker, 8, l1).item() < 1e-6
    # a ragged border (40 = 5 cells, 36 = 4.5) is pooled too, not dropped
    assert lowpass_loss(x[..., :36], x[..., :36] + shift, 8, l1).item() == pytest.approx(shift.abs().mean().item())


def test_its_gradient_reaches_the_output_and_the_options_are_checked():
    x = torch.zeros(1, 3, 16, 16)
    rec = torch.full((1, 3, 16, 16), 0.2, requires_grad=True)
    lowpass_loss(x, rec, 8, l1).backward()
    assert rec.grad is not None and (rec.grad > 0).all()
    assert load_config("open-f8")["loss"]["lowpass_weight"] == 0.0  # off unless asked
    with pytest.raises(ValueError, match="loss.lowpass_weight"):
        load_config("open-f8", ["loss.lowpass_weight=-1"])
    with pytest.raises(ValueError, match="loss.lowpass_cell"):
        load_config("open-f8", ["loss.lowpass_cell=0"])
