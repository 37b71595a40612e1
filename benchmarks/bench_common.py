"""Helpers shared by the inference benchmarks (throughput.py and its parts, throughput_cpu.py):
threads, the machine, a random model, example inputs, the implementations' callables."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# our fast encoder paths: implementation name -> VQCTTokenizer precision (encode only)
FAST_IMPLS = {"ours-fast": "fast", "ours-bf16": "bf16"}
# A random model of the shipped faces64 architecture: vocabulary sizes of the faces prior.
RANDOM_ADJECTIVES, RANDOM_NOUNS = 676, 1502


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def diffusers_version() -> str | None:
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__


def make_random_model(folder: Path) -> Path:
    """Save a random tokenizer of the faces64 training architecture (speed and memory only)."""
    import torch

    from vqct_tokenizer import VQCTConfig, VQCTTokenizer

    spec = json.loads((REPO / "vqct_tokenizer" / "training" / "configs" / "faces64.json").read_text())["model"]
    config = VQCTConfig(**spec, quantizer="dual", num_adjectives=RANDOM_ADJECTIVES, num_nouns=RANDOM_NOUNS,
                        extra={"note": "random weights and codebook: for speed and memory benchmarks only"})
    torch.manual_seed(0)
    tok = VQCTTokenizer(config)
    with torch.no_grad():
        tok.codebook.normal_()
    tok.save_pretrained(folder)
    return folder


def example_inputs(tok: Any, batch: int, seed: int = 0) -> tuple[Any, Any]:
    """Random images in [-1, 1] and random valid token ids, deterministic for a seed."""
    import torch

    cfg = tok.config
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, cfg.resolution, cfg.resolution, generator=g) * 2 - 1
    h = cfg.latent_size
    cols = [torch.randint(grp.code_start, grp.code_end, (batch, h, h, grp.k), generator=g) for grp in cfg.groups]
    return images, torch.cat(cols, dim=-1)


def build_callables(tok: Any, impl: str) -> dict[str, Any]:
    """{'encode': images -> ids, 'decode': ids -> images} for one implementation."""
    model, codebook = tok.model, tok.codebook
    quantizer = model.quantizer
    if impl in FAST_IMPLS:  # encode only: the decoder has no fast path
        precision = FAST_IMPLS[impl]
        return {"encode": lambda x: tok.encode_preprocessed(x, precision=precision)}
    if impl == "ours":
        return {"encode": lambda x: model.encode_ids(x, codebook),
                "decode": lambda ids: model.decode_ids(ids, codebook)}
    from vqct_tokenizer.interop import to_diffusers_vqmodel

    vq = to_diffusers_vqmodel(tok)
    return {"encode": lambda x: quantizer.encode(vq.encode(x).latents, codebook),
            "decode": lambda ids: vq.decode(quantizer.lookup(ids, codebook), force_not_quantize=True).sample}


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)
