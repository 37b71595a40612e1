"""Captions for a token dataset, and their frozen sentence embeddings.

A captions file maps the dataset's image keys (the paths its manifest lists, ``ds.paths``) to
captions, one per line as ``KEY<TAB>CAPTION``; a key may have several lines (one of its captions is
drawn per training sample). ``.gz`` files are read as gzip. Images without a caption train as
"no caption", like the captions dropped for classifier-free guidance.

The embedding is the sentence embedding of the text encoder the tokenizer's prior was built with
(``config.json`` records it under ``extra.prior.text_encoder``), so captions and code words live in
one space; tokenizers without a recorded prior (plain VQGAN) use MiniLM.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..codebook.embedding import MINILM_HUB_ID, embed_words, load_text_encoder

DEFAULT_TEXT_ENCODER = "minilm"


def read_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """``KEY<TAB>CAPTION`` lines -> {key: [captions]}; blank lines and lines starting with # are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    captions: dict[str, list[str]] = {}
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                key, tab, text = line.partition("\t")
                if not tab or not key.strip() or not text.strip():
                    raise ValueError(f"{path}, line {number}: expected IMAGE_KEY<TAB>CAPTION, got {line[:80]!r}. "
                                     "A file of bare captions (one per line, no keys) does not say which image "
                                     "each caption describes")
                captions.setdefault(Path(key.strip()).as_posix(), []).append(text.strip())
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path} is not a UTF-8 text file of IMAGE_KEY<TAB>CAPTION lines ({e})") from e
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return captions


def captions_per_image(captions: dict[str, list[str]], paths: Sequence[str], source: str) -> list[list[str]]:
    """The captions of each image of ``paths`` (a dataset's keys), [] for an image without any."""
    keys = [Path(p).as_posix() for p in paths]
    per_image = [captions.get(k, []) for k in keys]
    if not any(per_image):
        raise ValueError(f"none of the {len(captions)} keys of {source} is an image of the token dataset: "
                         f"the keys must be the dataset's image paths, e.g. {keys[0]!r} "
                         f"(the file has e.g. {next(iter(captions))!r})")
    return per_image


def prior_text_encoder(tokenizer_config: dict[str, Any]) -> tuple[str, bool] | None:
    """(load_text_encoder spec, normalize) of the prior a tokenizer's config.json records, or None."""
    info = ((tokenizer_config.get("extra") or {}).get("prior") or {}).get("text_encoder")
    if not isinstance(info, dict) or not isinstance(info.get("id"), str):
        return None
    backend, model_id, normalize = info.get("backend"), info["id"], bool(info.get("normalize", False))
    if model_id == MINILM_HUB_ID:
        return "minilm", normalize  # the offline package, whatever the Hub cache holds
    if backend == "glove":
        return "glove", normalize
    if backend in ("clip", "hf"):
        return f"{backend}:{model_id}", normalize
    return None


def tokenizer_text_encoder(model: str) -> tuple[str, bool]:
    """The text encoder of tokenizer ``model``'s prior; MiniLM (normalised) when none is recorded."""
    from ..model_files import resolve_model_dir

    try:
        folder = resolve_model_dir(model, local_files_only=True)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"cannot read the config of tokenizer {model!r}, which encoded the token dataset, "
                                f"to find its prior's text encoder ({e}); pass --text-encoder (e.g. minilm)") from e
    return prior_text_encoder(config) or (DEFAULT_TEXT_ENCODER, True)


def embed_captions(texts: Sequence[str], spec: str, normalize: bool, device: Any = None,
                   progress: bool = True) -> torch.Tensor:
    """(len(texts), dim) float32 sentence embeddings of ``texts`` by the frozen encoder ``spec``."""
    encoder = load_text_encoder(spec, device=device)
    return embed_words(encoder, list(texts), "{}", normalize=normalize, progress=progress, desc="captions")


class CaptionTable:
    """Every distinct caption of a dataset embedded once, and which rows belong to which image.

    ``embeddings`` (M, D); image i's captions are rows ``rows[offsets[i]:offsets[i + 1]]``.
    Cached in a safetensors file keyed by the captions and the encoder, so a resumed run reuses them.
    """

    def __init__(self, embeddings: torch.Tensor, rows: torch.Tensor, offsets: torch.Tensor) -> None:
        self.embeddings, self.rows, self.offsets = embeddings, rows, offsets

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def of(self, image: int) -> torch.Tensor:
        """Row indices (into ``embeddings``) of image ``image``'s captions; empty when it has none."""
        return self.rows[self.offsets[image]:self.offsets[image + 1]]

    @property
    def captioned(self) -> int:
        return int((self.offsets[1:] > self.offsets[:-1]).sum())

    @classmethod
    def build(cls, per_image: Sequence[Sequence[str]], spec: str, normalize: bool, cache: Path | None = None,
              device: Any = None, progress: bool = True) -> "CaptionTable":
        from itertools import accumulate

        from safetensors import safe_open
        from safetensors.torch import save_file

        from ..atomic import atomic_write

        key = hashlib.sha256(json.dumps([spec, normalize, list(map(list, per_image))]).encode()).hexdigest()
        if cache is not None and cache.is_file():
            with safe_open(str(cache), framework="pt") as f:
                if (f.metadata() or {}).get("key") == key:
                    return cls(*(f.get_tensor(name) for name in ("embeddings", "rows", "offsets")))
        distinct = list(dict.fromkeys(t for texts in per_image for t in texts))
        index = {t: i for i, t in enumerate(distinct)}
        rows = torch.tensor([index[t] for texts in per_image for t in texts], dtype=torch.long)
        offsets = torch.tensor([0, *accumulate(len(t) for t in per_image)], dtype=torch.long)
        embeddings = embed_captions(distinct, spec, normalize, device, progress).contiguous()
        if cache is not None:
            tensors = {"embeddings": embeddings, "rows": rows, "offsets": offsets}
            atomic_write(cache, lambda tmp: save_file(tensors, tmp, metadata={"key": key, "encoder": spec}))
        return cls(embeddings, rows, offsets)


__all__ = ["CaptionTable", "DEFAULT_TEXT_ENCODER", "captions_per_image", "embed_captions", "prior_text_encoder",
           "read_captions", "tokenizer_text_encoder"]
