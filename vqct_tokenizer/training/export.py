"""Training checkpoint -> slim tokenizer: the codebook is computed once, in eval mode, and frozen."""

from __future__ import annotations

from pathlib import Path

import torch

from ..tokenizer import VQCTTokenizer
from .checkpoint import load_checkpoint
from .config import complete_config, validate
from .model import VQCTTrainModel, build_model


def model_from_checkpoint(path: str | Path) -> VQCTTrainModel:
    path = Path(path)
    state = load_checkpoint(path)
    cfg = complete_config(state["config"])  # a checkpoint from an older version lacks newer (off) options
    validate(cfg)
    kept_prior = (path if path.is_dir() else path.parent) / "prior"
    model = build_model(cfg, prior_dir=kept_prior if kept_prior.is_dir() else None)
    model.load_state_dict(state["model"])
    return model.eval()


def tokenizer_from_model(model: VQCTTrainModel) -> VQCTTokenizer:
    model = model.eval()
    tok = VQCTTokenizer(model.config, model.vocab)
    tok.model.load_state_dict(model.autoencoder.state_dict())
    with torch.no_grad():
        # whatever the source is (transfer network in eval mode, learned / EMA codes, SimVQ's C @ W),
        # its output now is the frozen codebook; unit rows under the cosine lookup
        tok.codebook.copy_(model.codebook().float())
    return tok


def tokenizer_from_checkpoint(path: str | Path) -> VQCTTokenizer:
    """A checkpoint file (or a run folder: its latest checkpoint) as a ready-to-use tokenizer."""
    tok = tokenizer_from_model(model_from_checkpoint(path))
    tok.name_or_path = str(path)
    return tok


def export(checkpoint: str | Path, out_dir: str | Path) -> Path:
    tok = tokenizer_from_checkpoint(checkpoint)
    tok.save_pretrained(out_dir)
    return Path(out_dir)
