"""The slim inference tokenizer: encoder, fixed transferred codebook, decoder and the word list.

No GCN, no language model, no nltk: a folder with ``config.json``, ``model.safetensors`` and
``vocab.json`` is all it needs.

Token layout (dual quantizer, k adjectives per cell):

    tokens[..., i, j, :] = [adj_1, ..., adj_k, noun]     adj ids in [0, A), nearest first
                                                          noun id in [A, A+N)
    tok.vocab[id] is the word of any id.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_write
from .config import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME, ConfigError, VQCTConfig
from .defaults import DEFAULT_MODEL, find_shipped, shipped_names
from .errors import TokenError, WeightsError
from .image_io import pad_to_multiple, resize_to, to_output, to_tensors
from .models import VQAutoencoder

CODEBOOK_KEY = "codebook"


class VQCTTokenizer(nn.Module):
    """Images <-> grids of word tokens.

    Args:
        config: architecture, codebook sizes and preprocessing.
        vocab: one word per codebook row (adjectives first, then nouns). Defaults to placeholders.
    """

    def __init__(self, config: VQCTConfig, vocab: Sequence[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = VQAutoencoder(config)
        # channels-last decoder: ~30% faster decoding on CPU (oneDNN stops reordering at every conv).
        # The encoder keeps the default layout so tokens match the training model bit for bit.
        self.model.decoder.to(memory_format=torch.channels_last)
        self.model.post_quant_conv.to(memory_format=torch.channels_last)
        self.register_buffer("codebook", torch.zeros(config.codebook_size, config.codebook_dim))
        self.vocab: list[str] = list(vocab) if vocab is not None else default_vocab(config)
        if len(self.vocab) != config.codebook_size:
            raise ConfigError(f"vocab has {len(self.vocab)} words, config needs {config.codebook_size}")
        self.name_or_path: str | None = None
        self.eval()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.codebook.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def tokens_per_cell(self) -> int:
        return self.config.tokens_per_cell

    # ------------------------------------------------------------------ encode
    def preprocess(self, images: Any, resize: bool = True) -> tuple[list[torch.Tensor], bool, list[tuple[int, int]]]:
        """Inputs -> list of (3, H', W') in [-1, 1], whether batched, original (H, W) of each."""
        tensors, batched = to_tensors(images)
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        cfg = self.config
        if resize:
            tensors = [resize_to(t, cfg.resolution, cfg.resize_mode, cfg.resample) for t in tensors]
        else:
            tensors = [pad_to_multiple(t, cfg.downsample_factor) for t in tensors]
        return [t * 2.0 - 1.0 for t in tensors], batched, sizes

    @torch.inference_mode()
    def encode(self, images: Any, *, resize: bool = True, batch_size: int = 16,
               return_image_sizes: bool = False) -> Any:
        """Tokenize images.

        Args:
            images: a file path; a PIL image (any mode: alpha is composited over white, 16-bit and
                CMYK are converted); a numpy uint8 array (H, W, 3) or (B, H, W, 3) in 0..255 (float
                arrays in [0, 1]); a torch float tensor (3, H, W) or (B, 3, H, W) in [0, 1] (uint8
                tensors in 0..255); or a list of any of these, sizes mixed. Values outside the range
                raise ImageError.
            resize: True (default) resizes and center-crops to ``config.resolution`` as set in
                config.json. False keeps the native size, padding bottom/right to a multiple of the
                downsampling factor f; pass the original size to ``decode(image_size=...)`` (or use
                ``return_image_sizes``) to crop back.
            batch_size: images run through the encoder at a time.
            return_image_sizes: also return the original (H, W) of each image.

        Returns:
            LongTensor (h, w, k+1) for one image, (B, h, w, k+1) for a batch or list, on the model's
            device. With ``resize=False`` and mixed sizes, a list of (h_i, w_i, k+1) tensors.
        """
        inputs, batched, sizes = self.preprocess(images, resize=resize)
        grids: list[torch.Tensor] = []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            if len({t.shape for t in chunk}) == 1:
                x = torch.stack(chunk).to(self.device, self.dtype)
                grids.extend(self.model.encode_ids(x, self.codebook))
            else:  # native sizes differ: run one by one rather than pad to a common size
                grids.extend(self.model.encode_ids(t[None].to(self.device, self.dtype), self.codebook)[0] for t in chunk)
        if len({g.shape for g in grids}) == 1:
            out: Any = torch.stack(grids) if batched else grids[0]
        else:
            out = grids
        if return_image_sizes:
            return out, (sizes if batched else sizes[0])
        return out

    # ------------------------------------------------------------------ decode
    def check_tokens(self, tokens: Any) -> torch.Tensor:
        """Validate a token grid and return it as a LongTensor on the model's device."""
        if isinstance(tokens, np.ndarray):
            if not np.issubdtype(tokens.dtype, np.integer):
                raise TokenError(f"tokens must be integers, got numpy dtype {tokens.dtype}")
            tokens = torch.from_numpy(tokens.astype(np.int64))
        elif isinstance(tokens, (list, tuple)):
            try:
                tokens = torch.tensor(tokens)
            except (TypeError, ValueError) as e:
                raise TokenError(f"tokens list is not a rectangular grid of integers: {e}") from e
        if not isinstance(tokens, torch.Tensor):
            raise TokenError(f"tokens must be a tensor, numpy array or nested list, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TokenError(f"tokens must be integers, got dtype {tokens.dtype}")
        k1 = self.tokens_per_cell
        if tokens.ndim not in (3, 4):
            raise TokenError(f"tokens must be (h, w, {k1}) or (B, h, w, {k1}), got shape {tuple(tokens.shape)}")
        if tokens.shape[-1] != k1:
            raise TokenError(f"last dimension of tokens must be {k1} (ids per cell), got shape {tuple(tokens.shape)}")
        if tokens.numel() == 0:
            raise TokenError(f"token grid is empty: shape {tuple(tokens.shape)}")
        tokens = tokens.long()
        col = 0
        for g in self.config.groups:
            part = tokens[..., col:col + g.k]
            lo, hi = int(part.min()), int(part.max())
            if lo < g.code_start or hi >= g.code_end:
                bad = lo if lo < g.code_start else hi
                raise TokenError(f"token id {bad} out of range for {g.name} slots (columns {col}..{col + g.k - 1}): "
                                 f"valid ids are [{g.code_start}, {g.code_end})")
            col += g.k
        return tokens.to(self.device)

    @torch.inference_mode()
    def decode(self, tokens: Any, *, output_type: str = "pil", image_size: tuple[int, int] | None = None,
               batch_size: int = 16) -> Any:
        """Token grid(s) -> image(s).

        Args:
            tokens: (h, w, k+1) or (B, h, w, k+1) integer ids (tensor, numpy array or nested list),
                or a list of (h, w, k+1) grids of different sizes.
            output_type: "pil" (PIL.Image), "np" (uint8 (H, W, 3)) or "pt" (float (3, H, W) in [0, 1]).
            image_size: (H, W) to crop to, undoing the padding of ``encode(resize=False)``; for a
                list of grids, a list of sizes.

        Returns:
            One image for an (h, w, k+1) grid; a list (pil), a (B, H, W, 3) array (np) or a
            (B, 3, H, W) tensor (pt) for a batch.
        """
        if isinstance(tokens, list) and tokens and isinstance(tokens[0], (torch.Tensor, np.ndarray)) \
                and len({tuple(t.shape) for t in tokens}) > 1:
            sizes = image_size if image_size is not None else [None] * len(tokens)
            return [self.decode(t, output_type=output_type, image_size=s) for t, s in zip(tokens, sizes)]
        grid = self.check_tokens(tokens)
        batched = grid.ndim == 4
        if not batched:
            grid = grid[None]
        outs = []
        for start in range(0, grid.shape[0], batch_size):
            x = self.model.decode_ids(grid[start:start + batch_size], self.codebook)
            outs.append(x.float().add(1.0).mul(0.5).clamp(0.0, 1.0))
        images = torch.cat(outs)
        if image_size is not None:
            h, w = image_size
            if h > images.shape[2] or w > images.shape[3]:
                raise ValueError(f"image_size {image_size} is larger than the decoded {tuple(images.shape[2:])}")
            images = images[:, :, :h, :w]
        result = to_output(images, output_type)
        return result if batched else result[0]

    def reconstruct(self, images: Any, *, resize: bool = True, output_type: str = "pil") -> Any:
        """decode(encode(images)); with ``resize=False`` the output has each input's original size."""
        tokens, sizes = self.encode(images, resize=resize, return_image_sizes=True)
        if resize:
            return self.decode(tokens, output_type=output_type)
        if isinstance(tokens, list):
            return self.decode(tokens, output_type=output_type, image_size=sizes)
        if tokens.ndim == 4:
            if len(set(sizes)) == 1:
                return self.decode(tokens, output_type=output_type, image_size=sizes[0])
            return [self.decode(t, output_type=output_type, image_size=s) for t, s in zip(tokens, sizes)]
        return self.decode(tokens, output_type=output_type, image_size=sizes)

    # ------------------------------------------------------------------ words
    def describe(self, tokens: Any) -> Any:
        """The grid in words: for (h, w, k+1) a list of h rows of w strings like "pale smooth skin";
        for a batch, a list of such grids."""
        grid = self.check_tokens(tokens).cpu()
        if grid.ndim == 4:
            return [self.describe(g) for g in grid]
        return [[" ".join(self.vocab[i] for i in cell) for cell in row.tolist()] for row in grid]

    @staticmethod
    def format_grid(words: list[list[str]]) -> str:
        """A word grid as aligned text, one row per line."""
        width = max(len(w) for row in words for w in row)
        return "\n".join(" | ".join(w.ljust(width) for w in row) for row in words)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json, model.safetensors and vocab.json (each atomically)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(path / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        atomic_write(path / CONFIG_NAME, lambda p: self.config.save(p))
        atomic_write(path / VOCAB_NAME, lambda p: Path(p).write_text(json.dumps(vocab_to_json(self.config, self.vocab), indent=1) + "\n"))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> "VQCTTokenizer":
        """Load from a local folder, a shipped model name (e.g. ``"vqct-faces64"``), or a Hub repo id."""
        folder = resolve_model_dir(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only)
        config = VQCTConfig.load(folder / CONFIG_NAME)
        vocab = load_vocab(folder / VOCAB_NAME, config) if (folder / VOCAB_NAME).is_file() else None
        tok = cls(config, vocab)
        tok.load_weights(folder / WEIGHTS_NAME)
        tok.name_or_path = str(name_or_path)
        if device is not None or dtype is not None:
            tok.to(device=device, dtype=dtype)
        return tok

    def load_weights(self, file: str | os.PathLike) -> None:
        """Load a safetensors file; any missing, unexpected or wrongly shaped key is an error."""
        state = read_safetensors(file)
        check_state_dict(state, self.state_dict(), str(file))
        self.load_state_dict(state, strict=True)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload VQCT tokenizer", revision: str | None = None) -> str:
        """Upload config, weights and vocab to a Hugging Face Hub model repo; returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                     revision=revision, repo_type="model")
        return str(info)

    def extra_repr(self) -> str:
        c = self.config
        return (f"resolution={c.resolution}, f={c.downsample_factor}, quantizer={c.quantizer}, "
                f"codebook={c.codebook_size}x{c.codebook_dim}, tokens_per_cell={c.tokens_per_cell}")


# ---------------------------------------------------------------------------------------- helpers
def default_vocab(config: VQCTConfig) -> list[str]:
    if config.quantizer == "vq":
        return [f"code{i}" for i in range(config.num_codes)]
    return [f"adj{i}" for i in range(config.num_adjectives)] + [f"noun{i}" for i in range(config.num_nouns)]


def vocab_to_json(config: VQCTConfig, vocab: Sequence[str]) -> dict[str, list[str]]:
    if config.quantizer == "vq":
        return {"codes": list(vocab)}
    a = config.num_adjectives
    return {"adjectives": list(vocab[:a]), "nouns": list(vocab[a:])}


def load_vocab(file: Path, config: VQCTConfig) -> list[str]:
    try:
        data = json.loads(Path(file).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file} is not valid JSON: {e}") from e
    if config.quantizer == "vq":
        words = data.get("codes") if isinstance(data, dict) else None
        expected = {"codes": config.num_codes}
    else:
        if not isinstance(data, dict) or "adjectives" not in data or "nouns" not in data:
            raise ConfigError(f"{file} must hold {{'adjectives': [...], 'nouns': [...]}}")
        expected = {"adjectives": config.num_adjectives, "nouns": config.num_nouns}
        words = None
    for key, n in expected.items():
        got = data.get(key) if isinstance(data, dict) else None
        if not isinstance(got, list) or not all(isinstance(w, str) for w in got):
            raise ConfigError(f"{file}: '{key}' must be a list of strings")
        if len(got) != n:
            raise ConfigError(f"{file}: {len(got)} {key} but config.json says {n}")
    return list(words) if words is not None else list(data["adjectives"]) + list(data["nouns"])


def read_safetensors(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, say) is refused without being unpickled."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{file} is not a valid safetensors file ({e}). Weights are only read from "
                           "safetensors; pickled checkpoints are never loaded") from e


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if wrong:
        problems.append("wrong shapes " + ", ".join(f"{k}: file {tuple(state[k].shape)} vs config "
                                                   f"{tuple(expected[k].shape)}" for k in wrong[:5]))
    if problems:
        raise WeightsError(f"weights in {source} do not match config.json: " + "; ".join(problems))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"weights in {source} contain NaN or inf in {_preview(bad)}")


def _preview(keys: list[str], n: int = 5) -> str:
    return str(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def resolve_model_dir(name_or_path: str | os.PathLike, *, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                      local_files_only: bool = False) -> Path:
    """A local folder, a shipped model name, or a Hugging Face Hub repo id -> local folder."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} has no {CONFIG_NAME}; is it a VQCT tokenizer folder?")
        return path
    name = str(name_or_path)
    shipped = find_shipped(name)
    if shipped is not None:
        return shipped
    # "weights/foo" looks like a repo id too; a local parent folder says the user meant a path
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1 or path.parent.is_dir()
    if looks_local:
        raise FileNotFoundError(f"no tokenizer folder at {name!r}, and it is not a Hub repo id (owner/name). "
                                f"Shipped models: {shipped_names() or 'none'}")
    return _download_from_hub(name, revision=revision, cache_dir=cache_dir, token=token,
                              local_files_only=local_files_only)


def _download_from_hub(repo_id: str, **kwargs: Any) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError, HFValidationError  # .utils: also on hub 0.23

    files = {}
    for fname in (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME):
        try:
            files[fname] = Path(hf_hub_download(repo_id, fname, **{k: v for k, v in kwargs.items() if v is not None}))
        except HFValidationError as e:
            raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a valid Hub repo id: {e}") from e
        except Exception as e:  # network, auth, offline, missing file: all end the same way for the user
            # vocab.json is optional, as in a local folder; hub 2.x raises subclasses
            # (RemoteEntryNotFoundError online, LocalEntryNotFoundError offline), so test by isinstance
            if fname == VOCAB_NAME and isinstance(e, EntryNotFoundError):
                continue
            raise OSError(f"could not get {fname} of {repo_id!r} from the Hugging Face Hub "
                          f"({type(e).__name__}: {e}). Check the repo id and your connection, or pass a "
                          "local folder; offline, the files must already be in the Hub cache") from e
    folders = {p.parent for p in files.values()}
    if len(folders) != 1:
        raise OSError(f"Hub files of {repo_id!r} resolved to different snapshots: {folders}")
    return folders.pop()
