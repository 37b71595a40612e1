"""Learned-codebook baselines (training/learned_codebook.py): each option does what it says, trains
through ``train()`` and exports a tokenizer whose tokens equal the training model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import DDP_SPY_SCRIPT, make_tokenizer
from test_training import image_dir, tiny_cfg, tiny_prior  # noqa: F401  (fixtures)

from vqct_tokenizer import VQCTConfig, VQCTTokenizer
from vqct_tokenizer.config import CodeGroup
from vqct_tokenizer.models.quantizer import GroupedQuantizer
from vqct_tokenizer.training.checkpoint import find_latest, load_checkpoint
from vqct_tokenizer.training.config import CONFIG_DIR, load_config
from vqct_tokenizer.training.export import model_from_checkpoint, tokenizer_from_checkpoint
from vqct_tokenizer.training.learned_codebook import EMA_EPS, ManagedCodebook, SimVQCodebook, kmeans
from vqct_tokenizer.training.model import build_model
from vqct_tokenizer.training.trainer import train
from vqct_tokenizer.training.transfer import LearnedCodebook

ONE_GROUP = (CodeGroup("code", 0, 4, 1),)


def _latents(points: list[list[float]]) -> torch.Tensor:
    """[[x, y], ...] -> (1, 2, 1, P): one image, a 1 x P grid of 2-d latents."""
    return torch.tensor(points).t()[None, :, None, :]


def _ids(z: torch.Tensor, codebook: torch.Tensor, groups=ONE_GROUP) -> torch.Tensor:
    return GroupedQuantizer(groups, z.shape[1] // len(groups)).encode(z, codebook)


# ------------------------------------------------------------------------------ dead-code restart
def test_restart_revives_a_code_never_chosen():
    torch.manual_seed(0)
    book = ManagedCodebook(ONE_GROUP, 4, 2, restart_dead_after=2)
    with torch.no_grad():
        book.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]))  # code 3: far away
    z = _latents([[0.1, 0.0], [0.9, 0.1], [0.1, 0.8], [0.5, 0.6], [0.0, 0.2], [1.1, -0.1]])
    ids = _ids(z, book())
    assert 3 not in ids  # never chosen
    book.after_step(z, ids)
    assert torch.equal(book.weight[3], torch.tensor([100.0, 100.0]))  # unused for 1 step: not yet dead
    before = book.weight[:3].clone()
    book.after_step(z, ids)
    latents = z[0, :, 0, :].t()  # (6, 2)
    assert (book.weight[3] - latents).norm(dim=1).min() == 0  # now one of the batch's latents
    assert torch.equal(book.weight[:3], before)  # live codes untouched
    assert 3 in _ids(z, book())  # and it wins the latent it copied
    assert book.unused_steps[3] == 0


def test_restart_in_the_vqct_layout_draws_from_its_own_group():
    """Rows [0, A) restart from the adjective channel slice, rows [A, A+N) from the noun slice."""
    torch.manual_seed(0)
    groups = (CodeGroup("adjective", 0, 3, 2), CodeGroup("noun", 3, 6, 1))
    book = ManagedCodebook(groups, 6, 2, restart_dead_after=1)
    with torch.no_grad():
        book.weight.copy_(torch.tensor([[1.0, 0], [1.1, 0], [50, 50], [-1.0, 0], [-50, -50], [-50, -51]]))
    adj = torch.rand(8, 2) * 0.2 + torch.tensor([1.0, 0.0])   # adjective latents near codes 0, 1
    noun = torch.rand(8, 2) * 0.2 - torch.tensor([1.0, 0.0])  # noun latents near code 3
    z = torch.cat([adj, noun], dim=1).t()[None, :, None, :]   # (1, 4, 1, 8)
    ids = _ids(z, book(), groups)
    assert set(ids[..., :2].unique().tolist()) == {0, 1} and set(ids[..., 2].unique().tolist()) == {3}
    book.after_step(z, ids)
    assert (book.weight[2] - adj).norm(dim=1).min() == 0       # dead adjective code <- an adjective latent
    for row in (4, 5):
        assert (book.weight[row] - noun).norm(dim=1).min() == 0  # dead noun codes <- noun latents
    assert not torch.equal(book.weight[4], book.weight[5])       # distinct latents while there are enough


# ----------------------------------------------------------------------------------------- EMA
def test_ema_moves_a_code_to_the_mean_of_its_latents():
    book = ManagedCodebook(ONE_GROUP, 4, 2, ema_decay=0.5)
    start = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]])
    with torch.no_grad():
        book.weight.copy_(start)
        book.embed_sum.copy_(start)
    z = _latents([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # all nearest code 0; mean (2/3, 2/3)
    ids = _ids(z, book())
    assert ids.unique().tolist() == [0]
    book.after_step(z, ids)
    # one EMA step by hand: size 0.5·1 + 0.5·3 = 2, sum 0.5·0 + 0.5·(2, 2) = (1, 1), Laplace-smoothed size
    size = torch.tensor([2.0, 0.5, 0.5, 0.5])
    n = size.sum()
    smoothed = (size + EMA_EPS) / (n + 4 * EMA_EPS) * n
    assert torch.allclose(book.weight[0], torch.tensor([1.0, 1.0]) / smoothed[0], atol=1e-6)
    mean = torch.tensor([2 / 3, 2 / 3])
    assert (book.weight[0] - mean).norm() < (start[0] - mean).norm()
    for _ in range(30):
        book.after_step(z, ids)
    assert torch.allclose(book.weight[0], mean, atol=1e-3)


def test_ema_codes_ignore_gradients(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir, "codebook.quantizer=vq", "codebook.source=learned",
                   "codebook.ema_decay=0.99")
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model.codebook_source, ManagedCodebook)
    assert list(model.codebook_source.parameters()) == [] and not model.codebook().requires_grad
    before = model.codebook().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert out.codebook_loss.item() > 0
    (out.reconstruction.abs().mean() + out.q_loss).backward()
    opt.step()
    assert torch.equal(model.codebook(), before)  # the optimizer cannot move them...
    model.codebook_source.after_step(out.latent, out.ids)
    assert not torch.equal(model.codebook(), before)  # ...only the EMA update does


# -------------------------------------------------------------------------------------- k-means
def test_kmeans_places_codes_on_cluster_centres():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = torch.cat([c + 0.3 * torch.randn(200, 2) for c in centres])
    for seed in range(5):
        torch.manual_seed(seed)
        found = kmeans(x, 3)
        assert torch.cdist(centres, found).min(dim=1).values.max() < 0.1  # every cluster has its code
    # spherical k-means on unit vectors: unit centres
    unit = torch.nn.functional.normalize(x, dim=1)
    assert torch.allclose(kmeans(unit, 3, normalize=True).norm(dim=1), torch.ones(3))


def test_kmeans_with_fewer_latents_than_codes_uses_every_latent():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    found = kmeans(x, 8)
    assert found.shape == (8, 3)
    assert torch.cdist(x, found).min(dim=1).values.max() < 1e-6  # each latent is a code


@pytest.mark.parametrize("layout", ["vqgan", "rate-matched"])
def test_kmeans_start_runs_on_the_first_batch(layout, tiny_prior, image_dir, tmp_path):
    """Same seed, same autoencoder: k-means codes sit on the first batch's latents (small commitment
    loss per group), taming's near-zero start does not."""
    extra = ["codebook.source=learned"] + (["codebook.quantizer=vq"] if layout == "vqgan" else [])
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4) * 2 - 1, size=16, mode="bilinear")
    losses = {}
    for init in ("uniform", "kmeans"):
        torch.manual_seed(0)
        model = build_model(tiny_cfg(tmp_path, tiny_prior, image_dir, *extra, f"codebook.learned_init={init}"))
        losses[init] = model(x).commitment_loss.item()
        if init == "kmeans":
            assert bool(model.codebook_source.initialized) and not model.codebook_source.pending_init
            codes = model.codebook().detach().clone()
            model(x)  # only the first batch
            assert torch.equal(model.codebook().detach(), codes)
    assert losses["kmeans"] < 0.5 * losses["uniform"]


# ---------------------------------------------------------------------------------------- SimVQ
def test_simvq_trains_only_the_linear_map(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir, "codebook.quantizer=vq", "codebook.source=learned",
                   "codebook.simvq=true")
    torch.manual_seed(0)
    model = build_model(cfg)
    source = model.codebook_source
    assert isinstance(source, SimVQCodebook)
    assert {n for n, _ in source.named_parameters()} == {"proj.weight"}
    assert "random_codes" in dict(source.named_buffers())
    frozen, w, codes = source.random_codes.clone(), source.proj.weight.detach().clone(), model.codebook().detach().clone()
    assert torch.allclose(codes, frozen @ w.t())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    (out.reconstruction.abs().mean() + out.q_loss).backward()
    opt.step()
    assert torch.equal(source.random_codes, frozen)     # C frozen
    assert not torch.equal(source.proj.weight, w)       # W learned
    moved = (model.codebook().detach() - codes).norm(dim=1) > 0
    assert moved.all()  # one step on W moves every code, chosen or not


# --------------------------------------------------------------------------------------- cosine
def test_cosine_lookup_picks_by_angle_not_norm():
    codes = torch.tensor([[5.0, 0.0], [0.3, 0.3]])  # angle 0 (long), angle 45° (short)
    z = _latents([[2.0, 0.5]])                       # angle 14°: nearer code 1 in L2, code 0 in angle
    groups = (CodeGroup("code", 0, 2, 1),)
    assert _ids(z, codes, groups).item() == 1
    cosine = GroupedQuantizer(groups, 2, normalize=True)
    assert cosine.encode(cosine.normalize_latent(z), codes).item() == 0
    assert cosine.encode(z, codes).item() == 0  # the codes alone being normalised decides it too
    # the quantized latent is the unit code
    assert torch.allclose(cosine.lookup(torch.tensor([[[[0]]]]), codes).flatten(), torch.tensor([1.0, 0.0]))


def test_cosine_training_model_uses_unit_latents_and_codes(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir, "codebook.source=learned", "codebook.cosine=true")
    model = build_model(cfg)
    assert model.config.normalize_codes
    out = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    d = model.config.codebook_dim
    for g in range(2):  # adjective and noun slices each unit-norm
        assert torch.allclose(out.latent[:, g * d:(g + 1) * d].norm(dim=1), torch.ones(1), atol=1e-5)
    assert torch.allclose(model.codebook().norm(dim=1), torch.ones(1), atol=1e-5)


def test_cosine_tokenizer_round_trips_and_inference_honours_it(tmp_path):
    tok = make_tokenizer(normalize_codes=True)
    tok.save_pretrained(tmp_path / "cos")
    saved = json.loads((tmp_path / "cos" / "config.json").read_text())
    assert saved["normalize_codes"] is True
    back = VQCTTokenizer.from_pretrained(tmp_path / "cos")
    assert back.config.normalize_codes and back.model.quantizer.normalize
    x = torch.rand(2, 3, 32, 32)
    ids = back.encode(x)
    assert torch.equal(ids, tok.encode(x))
    # by hand: l2-normalised latent slices against l2-normalised codes
    plain = make_tokenizer()  # same seed: same weights and codebook, no cosine
    z = plain.model.encode_latent(x * 2 - 1)
    assert not torch.equal(plain.encode(x), ids)
    manual = GroupedQuantizer(plain.config.groups, plain.config.codebook_dim)
    d = plain.config.codebook_dim
    zn = torch.cat([torch.nn.functional.normalize(z[:, i * d:(i + 1) * d], dim=1) for i in range(2)], dim=1)
    assert torch.equal(manual.encode(zn, torch.nn.functional.normalize(plain.codebook, dim=1)), ids)
    # a cosine model hashes differently; models without the field keep their hashes
    assert back.config.architecture_hash() != plain.config.architecture_hash()
    assert VQCTConfig(num_adjectives=5, num_nouns=7).architecture_hash() == "3f0a5d3f9b6496b9"
    old = plain.config.to_dict()
    del old["normalize_codes"]  # a config.json written before the field existed
    assert VQCTConfig.from_dict(old).normalize_codes is False


def test_cosine_models_refuse_diffusers_conversion():
    from vqct_tokenizer.interop import check_diffusers_compatible

    check_diffusers_compatible(make_tokenizer().config)
    with pytest.raises(ValueError, match="cosine"):
        check_diffusers_compatible(make_tokenizer(normalize_codes=True).config)


# ------------------------------------------------------------------ every option: train() + export
OPTIONS = {
    "kmeans": ["codebook.learned_init=kmeans"],
    "ema": ["codebook.ema_decay=0.9"],
    "restart": ["codebook.restart_dead_after=1"],
    "simvq": ["codebook.simvq=true"],
    "cosine": ["codebook.cosine=true"],
    "strong": ["codebook.cosine=true", "codebook.learned_init=kmeans", "codebook.ema_decay=0.99",
               "codebook.restart_dead_after=1"],
}
LAYOUTS = {
    "vqgan": ["codebook.quantizer=vq", "codebook.source=learned"],
    "rate-matched": ["codebook.source=learned"],
    "single": ["codebook.source=learned", "codebook.pos=single"],
}


# every option in both layouts; pos=single (both groups search all rows) with the strong combination and SimVQ
COMBINATIONS = [(o, lay) for o in sorted(OPTIONS) for lay in ("vqgan", "rate-matched")] + [("strong", "single"),
                                                                                       ("simvq", "single")]


@pytest.mark.parametrize("option, layout", COMBINATIONS)
def test_every_option_trains_and_exports_identical_tokens(option, layout, tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, *LAYOUTS[layout], *OPTIONS[option],
                   "optim.steps=2", "run.ckpt_every=2")
    torch.manual_seed(0)
    start = build_model(cfg).codebook().detach()
    train(cfg)
    model = model_from_checkpoint(tmp_path / "run")
    assert not torch.allclose(model.codebook(), start), "two steps left the codebook where it started"
    tokenizer_from_checkpoint(tmp_path / "run").save_pretrained(tmp_path / "exported")
    tok = VQCTTokenizer.from_pretrained(tmp_path / "exported")
    assert tok.config.normalize_codes == ("codebook.cosine=true" in OPTIONS[option])
    assert tok.config.extra["training"]["source"] == "learned"
    torch.manual_seed(1)
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(model.encode_ids(x * 2 - 1), tok.encode(x))
    assert torch.equal(tok.codebook, model.codebook())  # the final codebook, baked


@pytest.mark.parametrize("option", ["strong", "simvq"])
def test_options_train_under_bf16_autocast(option, tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path, tiny_prior, image_dir, *LAYOUTS["rate-matched"], *OPTIONS[option],
                   "run.precision=bf16", "optim.steps=3")
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["loss"] is not None and r["commitment"] is not None for r in rows)
    assert model_from_checkpoint(tmp_path).codebook().dtype == torch.float32


def test_strong_combination_resumes_bit_for_bit(tiny_prior, image_dir, tmp_path):
    """EMA statistics, dead-code counters and the k-means flag are checkpointed, restarts' draws too."""
    opts = [*LAYOUTS["rate-matched"], *OPTIONS["strong"], "optim.steps=5"]
    train(tiny_cfg(tmp_path / "a", tiny_prior, image_dir, *opts))
    split = tiny_cfg(tmp_path / "b", tiny_prior, image_dir, *opts)
    train(split, max_steps=3)
    train(split, resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 5
    assert {"codebook_source.cluster_size", "codebook_source.unused_steps", "codebook_source.initialized"} <= set(a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"{k} differs after resume"


DDP_OPTIONS = {
    # EMA codes are buffers: the all-reduced statistics keep them identical
    "strong": [*LAYOUTS["rate-matched"], *OPTIONS["strong"]],
    # gradient-trained codes are parameters, which DDP never re-broadcasts: restarts must copy rank 0's
    # latents (64 codes for 2 x 64 latents per rank: some go unused every step)
    "kmeans-restart": [*LAYOUTS["vqgan"], "codebook.num_codes=64", "codebook.learned_init=kmeans",
                       "codebook.restart_dead_after=1"],
}


@pytest.mark.parametrize("option", sorted(DDP_OPTIONS))
def test_ddp_two_ranks_keep_upkept_codebooks_identical(option, tiny_prior, image_dir, tmp_path):
    """torchrun, gloo, 2 ranks, each its own half-batch: all-reduced EMA statistics and rank 0's
    k-means centres and restart latents keep every rank's codebook (and everything else) identical."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SPY_SCRIPT)
    out = tmp_path / "ddp"
    overrides = ["model.resolution=16", "model.ch=8", "model.ch_mult=[1,2]", "model.num_res_blocks=1",
                 "model.attn_resolutions=[8]", "model.z_channels=8", "model.codebook_dim=4", "model.norm_groups=4",
                 f"codebook.prior={tiny_prior}", "loss.perceptual=none", "loss.disc_start=100", f"data.train={image_dir}",
                 "data.workers=0", "optim.batch_size=4", "optim.steps=3", "run.ckpt_every=3", "run.image_every=0",
                 "run.threads=1", f"run.out_dir={out}", *DDP_OPTIONS[option]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    assert bool(r0["codebook_source.initialized"])
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"


def test_checkpoint_from_before_the_options_still_exports(tiny_prior, image_dir, tmp_path):
    cfg = tiny_cfg(tmp_path / "run", tiny_prior, image_dir, *LAYOUTS["vqgan"], "optim.steps=1", "run.ckpt_every=1")
    train(cfg)
    ckpt = find_latest(tmp_path / "run")
    state = load_checkpoint(ckpt)
    for key in ("learned_init", "ema_decay", "restart_dead_after", "simvq", "cosine"):
        del state["config"]["codebook"][key]
    torch.save(state, ckpt)
    tok = tokenizer_from_checkpoint(ckpt)
    assert not tok.config.normalize_codes and "ema_decay" not in tok.config.extra["training"]


# ------------------------------------------------------------------------------ config and defaults
def test_defaults_keep_the_plain_learned_codebook(tiny_prior, image_dir, tmp_path):
    for layout in ("vqgan", "rate-matched"):
        model = build_model(tiny_cfg(tmp_path, tiny_prior, image_dir, *LAYOUTS[layout]))
        assert type(model.codebook_source) is LearnedCodebook and not model.config.normalize_codes
        assert not hasattr(model.codebook_source, "after_step")
        assert set(model.config.extra["training"]) == {"quantizer", "source", "transfer", "pos", "word_vectors",
                                                       "edge_weight", "adjacency_norm", "center_words"}


@pytest.mark.parametrize("overrides, match", [
    (["codebook.learned_init=kmeans"], "source=learned"),                      # transfer source
    (["codebook.source=learned", "codebook.learned_init=pca"], "learned_init"),
    (["codebook.source=learned", "codebook.ema_decay=1.0"], "ema_decay"),
    (["codebook.source=learned", "codebook.restart_dead_after=-1"], "restart_dead_after"),
    (["codebook.source=learned", "codebook.restart_dead_after=2.5"], "restart_dead_after"),
    (["codebook.source=learned", "codebook.simvq=true", "codebook.ema_decay=0.99"], "simvq"),
    (["codebook.source=learned", "codebook.simvq=true", "codebook.restart_dead_after=5"], "simvq"),
    (["codebook.source=learned", "codebook.cosine=yes"], "cosine"),
])
def test_bad_learned_options_are_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_strong_shipped_config_is_open_f8_learned_with_the_options_on():
    base, cfg = load_config("open-f8-learned"), load_config("open-f8-learned-strong")
    cb = cfg["codebook"]
    assert cb["source"] == "learned" and cb["cosine"] and cb["learned_init"] == "kmeans"
    assert cb["ema_decay"] > 0 and cb["restart_dead_after"] > 0 and not cb["simvq"]
    # since round 3 the default itself looks codes up by angle in 32 dims: the network and lookup are the same
    assert cfg["model"]["codebook_dim"] == base["model"]["codebook_dim"] == 32 and base["codebook"]["cosine"]
    for section in ("model", "loss", "data", "optim"):
        assert cfg[section] == base[section]
    strong = json.loads((CONFIG_DIR / "open-f8-learned-strong.json").read_text())
    assert strong["base"] == "open-f8-learned"  # it states only what it changes
