"""The trainable model: the shared autoencoder plus a codebook source (transfer network or learned)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VQCTConfig
from ..models import VQAutoencoder
from .learned_codebook import LEARNED_OPTION_DEFAULTS, build_learned_codebook
from .losses import quantization_loss, rotation_trick, straight_through
from .transfer import CodebookTransfer, normalized_adjacency, prepare_word_vectors


@dataclass
class ForwardOutput:
    reconstruction: torch.Tensor  # (B, 3, H, W) in about [-1, 1]
    ids: torch.Tensor             # (B, h, w, Σk)
    q_loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    live_latent: torch.Tensor     # (B, G·D, h, w) the encoder output that was quantized, with its gradient

    @property
    def latent(self) -> torch.Tensor:
        """The quantized encoder output, detached (statistics, codebook upkeep)."""
        return self.live_latent.detach()


class VQCTTrainModel(nn.Module):
    def __init__(self, config: VQCTConfig, codebook_source: nn.Module, vocab: list[str] | None = None,
                 beta: float = 0.25, gradient: str = "ste") -> None:
        super().__init__()
        self.config = config
        self.autoencoder = VQAutoencoder(config)
        self.codebook_source = codebook_source
        self.vocab = vocab
        self.beta = beta
        self.gradient = gradient  # how the decoder's gradient reaches the encoder: "ste" | "rotation" | "none"
        self.decoder_only = False  # freeze_encoder()

    def freeze_encoder(self) -> None:
        """Train only post_quant_conv and the decoder (``optim.trainable=decoder``): the encoder, quant_conv
        and codebook are frozen and run without a graph, so every image keeps its tokens."""
        ae = self.autoencoder
        for part in (ae.encoder, ae.quant_conv, self.codebook_source):
            part.requires_grad_(False)
        self.decoder_only = True

    def freeze_decoder(self) -> None:
        """Train only the encoder and quant_conv (``optim.trainable=encoder``): post_quant_conv, the decoder
        and the codebook are frozen, so a token decodes as it did at the start and only which tokens an
        image gets can change. The decoder still runs with a graph: its gradient reaches the encoder."""
        ae = self.autoencoder
        for part in (ae.post_quant_conv, ae.decoder, self.codebook_source):
            part.requires_grad_(False)

    def codebook(self) -> torch.Tensor:
        """(K, D): the codebook the quantizer uses and export bakes (unit rows under the cosine lookup)."""
        codebook = self.codebook_source()
        # a frozen codebook from an export is already what the quantizer uses: renormalising would move
        # its rows by an ulp, and the fine-tuned export would no longer carry the start's codes bit for bit
        if self.config.normalize_codes and not getattr(self.codebook_source, "final_rows", False):
            return F.normalize(codebook, dim=1)
        return codebook

    def forward(self, x: torch.Tensor) -> ForwardOutput:
        ae = self.autoencoder
        if self.decoder_only:
            with torch.no_grad():
                z = ae.encode_latent(x)
                z_q, ids = ae.quantizer(z, self.codebook())
                q_loss, cb_loss, commit = quantization_loss(z, z_q, self.beta, len(ae.quantizer.groups))
            return ForwardOutput(ae.decode_latent(z_q), ids, q_loss, cb_loss, commit, z)
        codebook = self.codebook()
        z = ae.encode_latent(x)                      # (B, G·D, h, w), unit-norm per group if cosine
        if self.training and getattr(self.codebook_source, "pending_init", False):
            self.codebook_source.init_from_latents(z.detach())  # k-means start on the first batch
            codebook = self.codebook()
        z_q, ids = ae.quantizer(z, codebook)         # z_q differentiable w.r.t. the codebook only
        q_loss, cb_loss, commit = quantization_loss(z, z_q, self.beta, len(ae.quantizer.groups))
        groups = len(ae.quantizer.groups)
        if self.gradient == "rotation":
            passed = rotation_trick(z, z_q, groups)
        elif self.gradient == "none":  # a control for probes: the decoder reads z itself, unquantized
            passed = z
        else:
            passed = straight_through(z, z_q)
        rec = ae.decode_latent(passed)
        return ForwardOutput(rec, ids, q_loss, cb_loss, commit, z)

    @torch.no_grad()
    def encode_ids(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode_ids(x, self.codebook())


def resolve_prior_dir(cfg: dict[str, Any]) -> Path:
    """``codebook.prior``: "default", the name of a prior shipped in codebook/priors/, or a folder."""
    from ..codebook.prior import default_prior_path

    name = cfg["codebook"]["prior"]
    if name == "default":
        return default_prior_path()
    shipped = default_prior_path().parent / name
    if "/" not in name and "\\" not in name and shipped.is_dir() and not Path(name).is_dir():
        return shipped
    return Path(name)


def build_model(cfg: dict[str, Any], prior_dir: str | Path | None = None) -> VQCTTrainModel:
    """Model from a training config (see training/config.py); loads the prior when one is needed.

    ``prior_dir`` overrides the config's prior (export uses the copy a run keeps beside its checkpoints).
    """
    cb, m = cfg["codebook"], cfg["model"]
    arch = {k: m[k] for k in ("resolution", "ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                              "mid_attention", "z_channels", "codebook_dim", "norm_groups", "encoder_norm", "decoder_norm",
                              "dropout")}
    arch["normalize_codes"] = bool(cb.get("cosine", False))
    provenance = {"training": {k: cb[k] for k in ("quantizer", "source", "transfer", "pos", "word_vectors",
                                                  "edge_weight", "adjacency_norm", "center_words")}}
    # learned-codebook options go into the provenance only when on: exports of other configs are unchanged
    provenance["training"].update({k: cb[k] for k, off in LEARNED_OPTION_DEFAULTS.items()
                                   if cb.get(k, off) != off})
    if cb["quantizer"] == "vq":
        config = VQCTConfig(**arch, quantizer="vq", num_codes=int(cb["num_codes"]), extra=provenance)
        return VQCTTrainModel(config, build_learned_codebook(cb, config), None, cfg["loss"]["beta"], cfg["loss"]["quantizer_gradient"])

    start = None
    if cfg["run"].get("init_from"):
        from .warm_start import load_start

        start = load_start(cfg["run"]["init_from"])
        provenance["training"]["init_from"] = str(cfg["run"]["init_from"])
    if cb["source"] == "fixed":  # the start folder's codebook, frozen (training/warm_start.py)
        from .warm_start import FixedCodebook, load_autoencoder

        sc = start.config
        if cb["remap"] != "none":
            provenance["training"]["remap"] = cb["remap"]
        config = VQCTConfig(**arch, quantizer="vqct", num_adjectives=sc.num_adjectives, num_nouns=sc.num_nouns,
                            k_adjectives=int(m["k_adjectives"]), shared_codebook=cb["pos"] == "single",
                            extra={**provenance, **({"prior": sc.extra["prior"]} if "prior" in sc.extra else {})})
        model = VQCTTrainModel(config, FixedCodebook(start.codebook, remap=cb["remap"] == "linear"),
                               list(start.vocab), cfg["loss"]["beta"],
                               cfg["loss"]["quantizer_gradient"])
        load_autoencoder(model, start, cfg["run"]["init_from"])
        if cfg["optim"]["trainable"] == "decoder":
            model.freeze_encoder()
        elif cfg["optim"]["trainable"] == "encoder":
            model.freeze_decoder()
        return model

    from ..codebook.prior import load_prior

    prior = load_prior(prior_dir if prior_dir is not None else resolve_prior_dir(cfg))
    a, n = prior.num_adjectives, prior.num_nouns
    provenance["prior"] = {k: prior.meta.get(k) for k in ("text_encoder", "corpora", "min_count") if k in prior.meta}
    config = VQCTConfig(**arch, quantizer="vqct", num_adjectives=a, num_nouns=n, k_adjectives=int(m["k_adjectives"]),
                        shared_codebook=cb["pos"] == "single", extra=provenance)
    if cb["source"] == "learned":  # rate-matched VQGAN: the VQCT layout, codebooks from scratch
        return _warm(VQCTTrainModel(config, build_learned_codebook(cb, config), None, cfg["loss"]["beta"],
                                    cfg["loss"]["quantizer_gradient"]), start, cfg)

    words = torch.cat([prior.adjective_embeddings, prior.noun_embeddings])  # (A+N, E)
    if cb["word_vectors"] == "random":
        # same shape and average norm as the language vectors, no language in them
        g = torch.Generator().manual_seed(int(cfg["run"]["seed"]) + 12345)
        rand = torch.randn(words.shape, generator=g)
        words = rand * (words.norm(dim=1).mean() / rand.norm(dim=1).mean())
    words = prepare_word_vectors(words, cb["center_words"], a)
    adjacency = None
    if cb["transfer"] == "gcn":
        adjacency = normalized_adjacency(prior.edge_index(), prior.edge_weight(), a, n, cb["edge_weight"], cb["adjacency_norm"])
    source = CodebookTransfer(words, config.codebook_dim, cb["transfer"], adjacency, float(cb["gcn_dropout"]))
    vocab = prior.vocab()
    return _warm(VQCTTrainModel(config, source, vocab, cfg["loss"]["beta"], cfg["loss"]["quantizer_gradient"]),
                 start, cfg)


def _warm(model: VQCTTrainModel, start: Any, cfg: dict[str, Any]) -> VQCTTrainModel:
    """``model`` with its autoencoder loaded from ``run.init_from`` when one is set."""
    if start is not None:
        from .warm_start import load_autoencoder

        load_autoencoder(model, start, cfg["run"]["init_from"])
    return model
