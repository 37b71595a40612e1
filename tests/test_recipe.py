"""The training recipe's parts: learning-rate schedule, weight EMA, rotation trick, time budget, and the
latent-geometry diagnostic in the training log (tiny configs, CPU, seconds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import shared_data_root, write_tiny_prior
from test_training import image_dir, tiny_cfg, tiny_prior  # noqa: F401  (fixtures)
from vqct_tokenizer.evaluation.geometry import LatentGeometry, participation_ratio, pc_truncation_psnr
from vqct_tokenizer.training.checkpoint import find_latest, load_checkpoint
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.export import model_from_checkpoint
from vqct_tokenizer.training.losses import rotation_trick
from vqct_tokenizer.training.schedule import WeightEMA, learning_rate
from vqct_tokenizer.training.trainer import train


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = {"lr": 1e-3, "warmup_steps": 10, "steps": 110, "schedule": "cosine", "min_lr_ratio": 0.1}
    assert learning_rate(0, cfg) == pytest.approx(1e-4)
    assert learning_rate(9, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way through the decay
    assert learning_rate(110, cfg) == pytest.approx(1e-4)
    rates = [learning_rate(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert learning_rate(50, {**cfg, "schedule": "constant"}) == 1e-3


def test_rotation_trick_passes_the_code_forward_and_the_rotated_gradient_back():
    torch.manual_seed(0)
    e = torch.randn(1, 4, 1, 1, requires_grad=True)  # one group of D = 4, one cell
    q = torch.randn(1, 4, 1, 1)
    out = rotation_trick(e, q, num_groups=1)
    assert torch.allclose(out, q, atol=1e-6)
    g = torch.randn(4)
    out.reshape(4).mul(g).sum().backward()
    ev, qv = e.detach().reshape(4), q.reshape(4)
    eh, qh = ev / ev.norm(), qv / qv.norm()
    r = (eh + qh) / (eh + qh).norm()
    rot = torch.eye(4) - 2 * torch.outer(r, r) + 2 * torch.outer(qh, eh)
    assert torch.allclose(rot @ eh, qh, atol=1e-6)                  # R rotates e's direction onto q's
    expected = (qv.norm() / ev.norm()) * rot.T @ g
    assert torch.allclose(e.grad.reshape(4), expected, atol=1e-5)
    assert not torch.allclose(e.grad.reshape(4), g)                 # not the straight-through gradient


def test_weight_ema_averages_parameters_and_copies_buffers():
    net = torch.nn.BatchNorm1d(3)
    ema = WeightEMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(7.0)
    ema.update(net)  # first update: decay min(0.5, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["weight"], torch.full((3,), d * 1.0 + (1 - d) * 3.0))
    assert torch.equal(ema.shadow["running_mean"], torch.full((3,), 7.0))


@pytest.mark.parametrize("extra", [[], ["optim.ema_decay=0.9", "optim.schedule=cosine", "optim.warmup_steps=2",
                                        "loss.quantizer_gradient=rotation", "codebook.cosine=true"]],
                         ids=["constant", "ema-cosine-rotation"])
def test_resume_is_bit_exact_with_schedule_and_ema(extra, tiny_prior, image_dir, tmp_path):  # noqa: F811
    straight = tiny_cfg(tmp_path / "a", tiny_prior, image_dir, "optim.steps=5", *extra)
    train(straight)
    split = tiny_cfg(tmp_path / "b", tiny_prior, image_dir, "optim.steps=5", *extra)
    train(split, max_steps=3)
    train(split, resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert ("model_ema" in a) == ("optim.ema_decay=0.9" in extra)
    if "model_ema" in a:
        for k in a["model_ema"]["shadow"]:
            assert torch.equal(a["model_ema"]["shadow"][k], b["model_ema"]["shadow"][k]), k
        assert a["model_ema"]["updates"] == b["model_ema"]["updates"] == 5
    rates = [json.loads(line)["lr"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert len(rates) == 5 and (len(set(rates)) > 1) == ("optim.schedule=cosine" in extra)


def test_export_uses_the_ema_weights(tiny_prior, image_dir, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=3", "optim.ema_decay=0.99")
    train(cfg)
    state = load_checkpoint(find_latest(tmp_path / "run"))
    model = model_from_checkpoint(find_latest(tmp_path / "run"))
    weight = "autoencoder.decoder.conv_out.weight"
    assert torch.equal(model.state_dict()[weight], state["model_ema"]["shadow"][weight])
    assert not torch.equal(state["model"][weight], state["model_ema"]["shadow"][weight])


def test_max_minutes_stops_with_a_checkpoint_and_resume_continues(tiny_prior, image_dir, tmp_path):  # noqa: F811
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=4", "run.ckpt_every=100")
    train(cfg, max_minutes=0.0)  # the budget is spent after the first step
    assert find_latest(tmp_path / "run").name == "ckpt_00000001.pt"
    train(cfg, resume=True)
    assert find_latest(tmp_path / "run").name == "ckpt_00000004.pt"


def test_training_log_reports_latent_geometry_per_group(tiny_prior, image_dir, tmp_path):  # noqa: F811
    train(tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=2"))
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for group in ("adjective", "noun"):
        assert 1.0 <= rec[f"latent_pr_{group}"] <= 4.0  # codebook_dim = 4
        assert 0.25 <= rec[f"latent_top_share_{group}"] <= 1.0


def test_participation_ratio_counts_directions():
    g = torch.Generator().manual_seed(0)
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 16, generator=g)
    assert participation_ratio(line) == pytest.approx(1.0, abs=1e-6)
    iso = torch.randn(20000, 16, generator=g)
    assert participation_ratio(iso) == pytest.approx(16.0, rel=0.03)


def test_latent_geometry_samples_a_bounded_number_of_cells():
    from vqct_tokenizer import VQCTConfig

    cfg = VQCTConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), mid_attention=False,
                     z_channels=8, codebook_dim=4, norm_groups=4, num_adjectives=5, num_nouns=7)
    geo = LatentGeometry(cfg, max_cells=100, per_batch=40)
    for _ in range(5):
        geo.update(torch.randn(4, 8, 8, 8))  # 256 cells a batch
    assert geo.count == 100
    out = geo.compute()
    assert set(out) == {"adjective", "noun"} and all(1 <= g["latent_pr"] <= 4 for g in out.values())


def test_pc_truncation_loses_nothing_for_a_decoder_of_one_direction():
    """A latent that varies along one direction per group decodes the same cut to its top component."""
    from vqct_tokenizer import VQCTConfig
    from vqct_tokenizer.models import VQAutoencoder

    cfg = VQCTConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), mid_attention=False,
                     z_channels=8, codebook_dim=4, norm_groups=4, num_adjectives=5, num_nouns=7)
    torch.manual_seed(0)
    model = VQAutoencoder(cfg).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = pc_truncation_psnr(model, cfg, x, ks=(1, 4))
    assert out["top4"] == pytest.approx(out["full"], abs=1e-3)  # all 4 dims kept: nothing lost
    with torch.no_grad():  # make the latent one-dimensional: quant_conv of rank 1 per group, no bias
        w = model.quant_conv.weight
        w.zero_()
        w[:, 0] = 1.0
        model.quant_conv.bias.zero_()
    out = pc_truncation_psnr(model, cfg, x, ks=(1,))
    assert math.isclose(out["top1"], out["full"], abs_tol=1e-3)


# ------------------------------------------------------------------------------------------ collapse
# A small open-f8 (f = 4, 32² crops of 64 real open-domain photos, D = 16, no perceptual loss) for 300
# steps, seeds 0 and 1. The noun group's latent PR in the last four log windows, averaged, measured on
# this project's CPU machines: round 2's Euclidean lookup 2.77 and 1.64 (mean 2.2); the cosine lookup
# 3.33 and 4.05 (mean 3.7). The bound sits between the two; the round-2 recipe must fail it.
NOUN_PR_BOUND = 3.0
RECIPES = {"cosine lookup (round 3)": ["codebook.cosine=true"], "Euclidean lookup (round 2)": []}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [
    "cosine lookup (round 3)",
    pytest.param("Euclidean lookup (round 2)",
                 marks=pytest.mark.xfail(strict=True, reason="the collapsing recipe must fail the bound")),
])
def test_latent_participation_ratio_stays_above_the_bound(recipe, tmp_path):
    photos = shared_data_root() / "open" / "train.txt"
    if not photos.is_file():
        pytest.skip(f"open-domain photos not found at {photos} (set VQCT_DATA)")
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{photos.parent / line}\n" for line in photos.read_text().split()[::40][:64]))
    prior = write_tiny_prior(tmp_path / "prior", num_adjectives=48, num_nouns=64)
    noun_pr = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        cfg = load_config(None, [
            "model.resolution=32", "model.ch=16", "model.ch_mult=[1,2,2]", "model.num_res_blocks=1",
            "model.attn_resolutions=[]", "model.mid_attention=false", "model.z_channels=16", "model.norm_groups=4",
            "model.codebook_dim=16", f"codebook.prior={prior}", "loss.perceptual=none", "loss.disc_start=100000",
            f"data.train={listing}", "data.workers=0", "data.crop=random_resized", "optim.batch_size=8",
            "optim.lr=2e-4", "optim.steps=300", f"run.seed={seed}", f"run.out_dir={out}", "run.log_every=25",
            "run.image_every=0", "run.ckpt_every=0", "run.threads=1", *RECIPES[recipe]])
        # a fresh interpreter, so that no state left by earlier tests can touch these numbers
        config = tmp_path / f"config{seed}.json"
        config.write_text(json.dumps(cfg))
        subprocess.run([sys.executable, "-m", "vqct_tokenizer", "train", "--config", str(config)], check=True,
                       capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        noun_pr.append(sum(r["latent_pr_noun"] for r in logs[-4:]) / 4)
    mean = sum(noun_pr) / len(noun_pr)
    assert mean >= NOUN_PR_BOUND, f"{recipe}: noun latent PR {mean:.2f} (seeds {noun_pr}) < {NOUN_PR_BOUND}"


def test_half_export_ships_the_ema_weights(tiny_prior, image_dir, tmp_path):  # noqa: F811
    from vqct_tokenizer import VQCTTokenizer
    from vqct_tokenizer.training.export import export_half, load_train_state

    train(tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=3", "optim.ema_decay=0.99"))
    state = load_checkpoint(find_latest(tmp_path / "run"))
    export_half(tmp_path / "run", tmp_path / "out", dtype=torch.float32)
    tok = VQCTTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    weight = "decoder.conv_out.weight"
    assert torch.equal(tok.model.state_dict()[weight], state["model_ema"]["shadow"][f"autoencoder.{weight}"])
    restored = load_train_state(tmp_path / "out" / "train-state")
    assert torch.equal(restored["ema"][f"autoencoder.{weight}"], state["model_ema"]["shadow"][f"autoencoder.{weight}"])
