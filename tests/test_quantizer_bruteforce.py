"""The k-nearest quantizer against brute force.

For every code group the chosen ids must be the k codes at the smallest Euclidean distance, nearest
first (computed here independently: ``torch.cdist`` in float64 and a full sort), and the quantized
latent must be the mean of those k codes (the adjective half) and the nearest code (the noun half).
Checked on the quantizer itself, in the training model's forward (eager and under bf16 autocast),
and in the tokenizer's encode/decode on every precision path.

Random continuous data has no exact ties, but float32 rounding may decide between two codes whose
distances agree to a few 1e-7. The quantizer's own tests use data checked to have no such near-tie
(every cell is compared exactly); on a network's latents a few near-tied cells (at most 5 %) may
take either code, as long as the picks' distances are the k smallest within the tie tolerance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from vqct_tokenizer import fast_encode
from vqct_tokenizer.config import CodeGroup
from vqct_tokenizer.models.quantizer import GroupedQuantizer
from vqct_tokenizer.training.config import load_config
from vqct_tokenizer.training.model import build_model

from conftest import make_tokenizer, random_rgb, write_tiny_prior

# relative gap (of squared distances, against their scale) below which two codes count as tied: far
# above float32 rounding of the quantizer's ||c||^2 - 2 z.c (a few 1e-7 of the scale)
TIE_GAP = 1e-5


def brute_force(z: torch.Tensor, codebook: torch.Tensor, groups, dim: int, normalize: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """z (P, G·D), codebook (K, D) -> ids (P, Σk), z_q (P, G·D), sq (P, Σk), tied (P,).

    Full pairwise distances in float64, a full stable sort, the first k taken; the quantized vector
    is the plain mean of the chosen rows. ``sq`` holds each pick's squared distance divided by the
    cell's scale (||z||^2 + max ||c||^2); ``tied`` marks cells where two of the first k+1 distances
    are closer than TIE_GAP, i.e. where rounding may legitimately decide the pick or its order.
    """
    z, codebook = z.detach().double(), codebook.detach().double()
    if normalize:
        codebook = codebook / codebook.norm(dim=1, keepdim=True)
    ids, parts, sqs = [], [], []
    tied = torch.zeros(z.shape[0], dtype=torch.bool)
    for gi, g in enumerate(groups):
        part = z[:, gi * dim:(gi + 1) * dim]
        if normalize:
            part = part / part.norm(dim=1, keepdim=True)
        codes = codebook[g.code_start:g.code_end]
        order = torch.sort(torch.cdist(part, codes), dim=1, stable=True)  # (P, |g|) Euclidean
        chosen = order.indices[:, :g.k]
        scale = (part.pow(2).sum(1) + codes.pow(2).sum(1).max())[:, None]
        sq = order.values[:, :g.k + 1] ** 2 / scale
        tied |= (sq.diff(dim=1) < TIE_GAP).any(1)
        ids.append(chosen + g.code_start)
        parts.append(codes[chosen].mean(dim=1))
        sqs.append(sq[:, :g.k])
    return torch.cat(ids, 1), torch.cat(parts, 1), torch.cat(sqs, 1), tied


def picked_distances(z: torch.Tensor, ids: torch.Tensor, codebook: torch.Tensor, groups, dim: int,
                     normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaled squared distance of each given pick (P, Σk), and the mean of the picked codes (P, G·D)."""
    z, codebook = z.detach().double(), codebook.detach().double()
    if normalize:
        codebook = codebook / codebook.norm(dim=1, keepdim=True)
    sqs, parts, col = [], [], 0
    for gi, g in enumerate(groups):
        part = z[:, gi * dim:(gi + 1) * dim]
        if normalize:
            part = part / part.norm(dim=1, keepdim=True)
        vecs = codebook[ids[:, col:col + g.k]]  # (P, k, D)
        scale = part.pow(2).sum(1) + codebook[g.code_start:g.code_end].pow(2).sum(1).max()
        sqs.append((vecs - part[:, None]).pow(2).sum(-1) / scale[:, None])
        parts.append(vecs.mean(1))
        col += g.k
    return torch.cat(sqs, 1), torch.cat(parts, 1)


def as_cells(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B·h·w, C), the quantizer's cell order."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def check(ids: torch.Tensor, z_q: torch.Tensor | None, z: torch.Tensor, codebook: torch.Tensor, groups, dim: int,
          normalize: bool = False, atol: float = 1e-6, max_tied: float = 0.0) -> None:
    """ids (B, h, w, Σk) and z_q (B, G·D, h, w) against brute force on the latent z (B, G·D, h, w).

    Cells without a near-tie must have exactly the brute-force ids (nearest first) and quantized
    vector. A near-tied cell (at most ``max_tied`` of them) must still pick codes whose distances
    are the k smallest, rank by rank, within TIE_GAP, and be the mean of what it picked.
    """
    cells = as_cells(z)
    got = ids.reshape(-1, ids.shape[-1])
    want_ids, want_zq, want_sq, tied = brute_force(cells, codebook, groups, dim, normalize)
    assert float(tied.float().mean()) <= max_tied, f"{int(tied.sum())} of {len(tied)} cells are near-tied"
    wrong = (got != want_ids).any(1) & ~tied
    assert not wrong.any(), (f"{int(wrong.sum())} of {len(wrong)} cells differ from brute force, first: "
                             f"{got[wrong][0].tolist()} vs {want_ids[wrong][0].tolist()}")
    got_sq, got_mean = picked_distances(cells, got, codebook, groups, dim, normalize)
    assert ((got_sq - want_sq).abs() < TIE_GAP).all(), "a near-tied cell picked a code that is not among the k nearest"
    if z_q is not None:
        zq = as_cells(z_q).double()
        torch.testing.assert_close(zq[~tied], want_zq[~tied], rtol=0, atol=atol)
        torch.testing.assert_close(zq[tied], got_mean[tied], rtol=0, atol=atol)


# ------------------------------------------------------------------------------- the quantizer
CASES = [  # (A, N, D, k, shared, normalize, seed)
    (12, 20, 8, 1, False, False, 0),
    (12, 20, 8, 2, False, False, 1),
    (12, 20, 8, 2, False, False, 2),
    (7, 5, 3, 3, False, False, 3),
    (30, 40, 16, 5, False, False, 4),
    (12, 20, 8, 2, True, False, 5),     # pos="single": both halves search all A+N rows
    (12, 20, 8, 2, False, True, 6),     # the cosine lookup
    (4, 9, 6, 4, False, False, 7),      # k = A: every adjective, nearest first
]


@pytest.mark.parametrize("a, n, d, k, shared, normalize, seed", CASES)
def test_quantizer_picks_the_k_nearest_codes_and_averages_them(a, n, d, k, shared, normalize, seed):
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(a + n, d, generator=g) * (1 + torch.rand(a + n, 1, generator=g))  # unequal norms
    z = torch.randn(3, 2 * d, 5, 4, generator=g) * 1.5
    if shared:
        groups = (CodeGroup("adjective", 0, a + n, k), CodeGroup("noun", 0, a + n, 1))
    else:
        groups = (CodeGroup("adjective", 0, a, k), CodeGroup("noun", a, a + n, 1))
    q = GroupedQuantizer(groups, d, normalize)
    z_in = q.normalize_latent(z)
    z_q, ids = q(z_in, codebook)
    assert ids.shape == (3, 5, 4, k + 1) and z_q.shape == z.shape
    check(ids, z_q, z, codebook, groups, d, normalize)
    # the k adjective ids of a cell are distinct, and ids stay in their group's range
    adj = ids[..., :k]
    assert (torch.sort(adj, -1).values.diff(dim=-1) > 0).all()
    for col, gr in zip((0, k), groups):
        assert ((ids[..., col] >= gr.code_start) & (ids[..., col] < gr.code_end)).all()
    # encode + lookup give the same as forward
    assert torch.equal(q.encode(z_in, codebook), ids)
    torch.testing.assert_close(q.lookup(ids, codebook), z_q)


def test_brute_force_reference_can_tell_a_wrong_pick():
    """The comparison is not vacuous: the second-nearest adjective in place of the nearest fails it."""
    a, n, d, k = 12, 20, 8, 2
    g = torch.Generator().manual_seed(1)
    codebook, z = torch.randn(a + n, d, generator=g), torch.randn(2, 2 * d, 3, 3, generator=g)
    groups = (CodeGroup("adjective", 0, a, k), CodeGroup("noun", a, a + n, 1))
    z_q, ids = GroupedQuantizer(groups, d)(z, codebook)
    swapped = ids.clone()
    swapped[..., [0, 1]] = ids[..., [1, 0]]  # same set, wrong order
    with pytest.raises(AssertionError, match="differ from brute force"):
        check(swapped, None, z, codebook, groups, d)
    off = z_q.clone()
    off[:, 0] += 1e-3
    with pytest.raises(AssertionError):
        check(ids, off, z, codebook, groups, d)


# ---------------------------------------------------------------------------- the training model
@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    return write_tiny_prior(tmp_path_factory.mktemp("prior"), num_adjectives=7)


TRAIN_CASES = {  # name -> overrides
    "gcn-k1": ["model.k_adjectives=1"],
    "gcn-k2": ["model.k_adjectives=2"],
    "gcn-k3": ["model.k_adjectives=3", "run.seed=3"],
    "single-k2": ["codebook.pos=single"],
    "learned-cosine-k2": ["codebook.source=learned", "codebook.cosine=true"],
    "vqgan": ["codebook.quantizer=vq", "codebook.source=learned", "codebook.num_codes=24"],
}


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_training_forward_quantizes_to_the_brute_force_codes(case, autocast, tiny_prior, tmp_path):
    cfg = load_config(None, [
        "model.resolution=16", "model.ch=8", "model.ch_mult=[1,2]", "model.num_res_blocks=1",
        "model.attn_resolutions=[]", "model.z_channels=8", "model.codebook_dim=4", "model.norm_groups=4",
        f"codebook.prior={tiny_prior}", "loss.perceptual=none", f"run.out_dir={tmp_path}", *TRAIN_CASES[case]])
    torch.manual_seed(int(cfg["run"]["seed"]))
    model = build_model(cfg).train()
    ae = model.autoencoder
    seen: dict = {}
    ae.quantizer.register_forward_hook(lambda m, args, out: seen.update(z=args[0], codebook=args[1], out=out))
    ae.post_quant_conv.register_forward_pre_hook(lambda m, args: seen.update(decoder_in=args[0]))
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(11)) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        fwd = model(x)
    z_q, ids = seen["out"]
    assert torch.equal(fwd.ids, ids)
    if autocast:  # the latent reaches the quantizer in bf16, the codebook in float32
        assert seen["z"].dtype == torch.bfloat16 and seen["codebook"].dtype == torch.float32
    cfg_model = model.config
    # the quantized latent is z_q in the latent's dtype: bf16 rounds it (8-bit mantissa)
    check(ids, z_q, seen["z"], seen["codebook"], cfg_model.groups, cfg_model.codebook_dim,
          cfg_model.normalize_codes, atol=1e-2 if autocast else 1e-6, max_tied=0.05)
    # what the decoder gets is z_q (straight-through: z + (z_q - z) in value)
    want = picked_distances(as_cells(seen["z"]), ids.reshape(-1, ids.shape[-1]), seen["codebook"], cfg_model.groups,
                            cfg_model.codebook_dim, cfg_model.normalize_codes)[1]
    torch.testing.assert_close(as_cells(seen["decoder_in"]).double(), want, rtol=0, atol=3e-2 if autocast else 1e-5)
    # and model.encode_ids (eval) agrees with brute force on the same latent
    model.eval()
    with torch.no_grad():
        z = ae.encode_latent(x)
        check(model.encode_ids(x), None, z, model.codebook(), cfg_model.groups, cfg_model.codebook_dim,
              cfg_model.normalize_codes, max_tied=0.05)


# ------------------------------------------------------------------------------------ inference
TOKENIZER_CASES = {  # name -> make_tokenizer overrides (A = 12, N = 20, D = 8 unless stated)
    "k1": dict(k_adjectives=1),
    "k2": dict(k_adjectives=2),
    "k3-d4": dict(k_adjectives=3, codebook_dim=4),
    "k5": dict(k_adjectives=5),
    "shared-k2": dict(shared_codebook=True),
    "cosine-k2": dict(normalize_codes=True),
    "vq": dict(quantizer="vq", num_codes=24, num_adjectives=0, num_nouns=0),
}


def inference_check(tok, precision: str) -> None:
    cfg = tok.config
    imgs = [random_rgb(40, 48, seed=s) for s in range(3)]
    tokens = tok.encode(imgs, precision=precision)
    x = torch.stack(tok.preprocess(imgs)[0])
    with torch.inference_mode():
        if precision == "fp32":
            z = tok.model.encode_latent(x)
        else:  # the latent the precision path hands the quantizer: a fresh copy of the same weights
            z = fast_encode.build_fast_encoder(tok.model, precision).latent(x)
            if cfg.normalize_codes:
                z = tok.model.quantizer.normalize_latent(z)
    assert tokens.shape == (3, cfg.latent_size, cfg.latent_size, cfg.tokens_per_cell)
    seen = {}
    hook = tok.model.post_quant_conv.register_forward_pre_hook(lambda m, args: seen.update(z_q=args[0]))
    try:
        tok.decode(tokens, output_type="pt", precision="fp32")  # the model's own post_quant_conv sees z_q
    finally:
        hook.remove()
    check(tokens, seen["z_q"], z, tok.codebook, cfg.groups, cfg.codebook_dim, cfg.normalize_codes, max_tied=0.05)


@pytest.mark.parametrize("precision", ["fp32", "fast", "bf16"])
@pytest.mark.parametrize("case", sorted(TOKENIZER_CASES))
def test_tokenizer_encode_and_decode_use_the_brute_force_codes(case, precision, monkeypatch):
    monkeypatch.setattr(fast_encode, "USE_COMPILE", False)  # "fast" eagerly here; compiled below
    inference_check(make_tokenizer(seed=0, **TOKENIZER_CASES[case]), precision)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler for inductor")
def test_compiled_fast_path_picks_the_brute_force_codes(recwarn):
    """torch.compile fuses the distances and top-k into the graph: it must still pick the k nearest."""
    tok = make_tokenizer(seed=0, k_adjectives=3)
    inference_check(tok, "fast")
    assert tok._fast._runners["fast"].compiled is not None, [str(w.message) for w in recwarn]
