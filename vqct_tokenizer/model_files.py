"""A tokenizer folder on disk or on the Hub: finding it, and reading and checking its files.

``config.json`` is read by ``VQCTConfig.load``; this module reads ``vocab.json`` (and writes its
layout), checks ``model.safetensors`` against the config before anything is allocated, and turns a
shipped model name or a Hugging Face Hub repo id into a local folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .config import CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME, ConfigError, VQCTConfig
from .defaults import find_shipped, not_installed_hint, shipped_names
from .errors import WeightsError


def default_vocab(config: VQCTConfig) -> list[str]:
    if config.quantizer == "vq":
        return [f"code{i}" for i in range(config.num_codes)]
    return [f"adj{i}" for i in range(config.num_adjectives)] + [f"noun{i}" for i in range(config.num_nouns)]


def vocab_to_json(config: VQCTConfig, vocab: Sequence[str]) -> dict[str, list[str]]:
    if config.quantizer == "vq":
        return {"codes": list(vocab)}
    a = config.num_adjectives
    return {"adjectives": list(vocab[:a]), "nouns": list(vocab[a:])}


def read_vocab(folder: Path, config: VQCTConfig, name: Any, allow_missing: bool) -> list[str] | None:
    """The folder's vocab.json; a missing one is an error unless ``allow_missing`` (placeholders)."""
    if (folder / VOCAB_NAME).is_file():
        return load_vocab(folder / VOCAB_NAME, config)
    if allow_missing:
        return None
    raise ConfigError(f"model {str(name)!r} has no {VOCAB_NAME} (looked in {folder}): its tokens would have "
                      "placeholder words (adj0, noun0, ...). Add the vocab.json written by save_pretrained, or "
                      "pass allow_missing_vocab=True to load it with placeholder words")


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


def check_weights_header(file: str | os.PathLike, cls: type, config: VQCTConfig, vocab: Sequence[str] | None) -> None:
    """Compare the tensor names and shapes in a safetensors header with those ``config`` builds,
    without allocating either: the model is built on the meta device and no tensor data is read.

    A config.json with absurd but individually valid sizes (ch=4096, ch_mult=[64, 64, 64]) would
    otherwise allocate and randomly initialise terabytes before its weights were found not to fit.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {file}")
    try:
        with safe_open(str(file), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{file} is not a valid safetensors file ({e}). Weights are only read from "
                           "safetensors; pickled checkpoints are never loaded") from e
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in cls(config, vocab).state_dict().items()}
    check_shapes(shapes, expected, str(file))


def check_shapes(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """WeightsError naming every missing, unexpected and wrongly shaped tensor."""
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if tuple(shapes[k]) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if wrong:
        problems.append("wrong shapes " + ", ".join(f"{k}: file {tuple(shapes[k])} vs config "
                                                   f"{tuple(expected[k])}" for k in wrong[:5]))
    if problems:
        raise WeightsError(f"weights in {source} do not match config.json: " + "; ".join(problems))


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in expected.items()},
                 source)
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
    hint = not_installed_hint(name)
    if hint is not None:
        raise FileNotFoundError(hint)
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

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    unreachable = None
    if hub_offline():  # also when set after huggingface_hub was imported (it reads the variable once)
        kwargs["local_files_only"] = True
    elif not kwargs.get("local_files_only"):
        # Without a network huggingface_hub retries each file for ~25 s before it looks in its cache;
        # one quick probe without retries tells us to go to the cache at once.
        unreachable = _probe_hub(repo_id, kwargs.get("revision"), kwargs.get("token"))
        if unreachable is not None:
            kwargs["local_files_only"] = True
    files = {}
    for fname in (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME):
        try:
            files[fname] = Path(hf_hub_download(repo_id, fname, **kwargs))
        except HFValidationError as e:
            raise FileNotFoundError(f"{repo_id!r} is neither a local folder nor a valid Hub repo id: {e}") from e
        except Exception as e:  # network, auth, offline, missing file: all end the same way for the user
            # vocab.json is optional here (from_pretrained decides what a missing one means); hub 2.x
            # raises subclasses (RemoteEntryNotFoundError online, LocalEntryNotFoundError offline)
            if fname == VOCAB_NAME and isinstance(e, EntryNotFoundError):
                continue
            if unreachable is not None or hub_offline():
                why = (f"cannot reach the Hugging Face Hub ({one_line(unreachable)})" if unreachable is not None
                       else "HF_HUB_OFFLINE is set")
                raise OSError(f"could not get {fname} of {repo_id!r}: {why}, and it is not in the local Hub "
                              "cache. Connect once to download it, or pass a local folder") from e
            raise OSError(f"could not get {fname} of {repo_id!r} from the Hugging Face Hub "
                          f"({one_line(e)}). Check the repo id and your connection, or pass a "
                          "local folder; offline, the files must already be in the Hub cache") from e
    folders = {p.parent for p in files.values()}
    if len(folders) != 1:
        raise OSError(f"Hub files of {repo_id!r} resolved to different snapshots: {folders}")
    return folders.pop()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set in the environment since."""
    import huggingface_hub.constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _probe_hub(repo_id: str, revision: str | None, token: Any) -> Exception | None:
    """One HEAD request for config.json, without retries: the error when the Hub cannot be reached
    at all (DNS, refused, timeout); None when it answered, even with 401 or 404, which
    hf_hub_download then reports in its own words."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, CONFIG_NAME, revision=revision), token=token, timeout=10)
    except HfHubHTTPError:
        return None
    except Exception as e:  # noqa: BLE001 - httpx, requests or socket errors, depending on the hub version
        return e
    return None


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
