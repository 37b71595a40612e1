"""Stage 2: a small GPT-style generator over token grids, unconditional or caption-conditioned.

    model.py     GeneratorConfig, TokenGenerator: the network, sampling, generator.json + .safetensors
    captions.py  captions files (KEY<TAB>CAPTION) and their frozen sentence embeddings
    train.py     train_generator: resumable, bf16, DDP training on a token dataset

    from vqct_tokenizer.generation import TokenGenerator, train_generator
    run = train_generator("tokens/", "runs/gen", captions="captions.tsv", settings={"steps": 2000})
    grids = TokenGenerator.from_pretrained(run / "generator").sample(16)

Training side: the slim tokenizer never imports this package.
"""

from __future__ import annotations

from typing import Any

from .model import GeneratorConfig, SlotGroup, TokenGenerator

_LAZY = {"train_generator": "train", "GeneratorTraining": "settings", "evaluate_bits": "train",
         "CaptionTable": "captions", "read_captions": "captions"}


def __getattr__(name: str) -> Any:
    # the trainer's stack loads only when training is asked for, not when sampling
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GeneratorConfig", "SlotGroup", "TokenGenerator", *_LAZY]
