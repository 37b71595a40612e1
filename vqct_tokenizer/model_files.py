"""A tokenizer folder on disk or on the Hub: finding it, and reading and checking its files.

``config.json`` is read by ``VQCTConfig.load``; this module reads ``vocab.json`` (and writes its
layout), checks the weights against the config before anything is allocated, and turns a shipped
model name or a Hugging Face Hub repo id into a local folder.

Weights are either one ``model.safetensors`` or, sharded, ``model.safetensors.index.json`` (the
Hugging Face layout: ``{"metadata": {...}, "weight_map": {tensor name: shard file}}``) beside
``model-00001-of-0000N.safetensors`` files. Either may hold float16 or bfloat16 tensors; reading
upcasts every floating tensor to float32, so a model stored at half size computes as before.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_write

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


# ---------------------------------------------------------------------------------------- shards
#: The Hugging Face name of a shard index beside ``model.safetensors``'s shards.
INDEX_SUFFIX = ".safetensors.index.json"
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.safetensors$")


def index_name(prefix: str) -> str:
    return f"{prefix}{INDEX_SUFFIX}"


def weights_file(folder: str | os.PathLike, prefix: str = "model") -> Path:
    """``prefix.safetensors`` when it exists, else its shard index when that exists (what
    ``read_weights`` takes); FileNotFoundError naming both when neither does."""
    folder = Path(folder)
    single, index = folder / f"{prefix}.safetensors", folder / index_name(prefix)
    for candidate in (single, index):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no weights in {folder}: neither {single.name} nor {index.name}")


def has_weights(folder: str | os.PathLike, prefix: str = "model") -> bool:
    try:
        weights_file(folder, prefix)
    except FileNotFoundError:
        return False
    return True


def read_weights(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """One safetensors file or a shard index -> state dict, floating tensors upcast to float32.

    Half-precision storage halves the files; the model computes in float32 all the same.
    """
    file = Path(file)
    state: dict[str, torch.Tensor] = {}
    for shard, names in _shards(file).items():
        part = read_safetensors(shard)
        if names is not None and set(part) != names:
            raise WeightsError(f"{shard} holds {_preview(sorted(set(part) ^ names))} contrary to {file.name}")
        state.update(part)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def save_sharded(state: dict[str, torch.Tensor], folder: str | os.PathLike, *, prefix: str = "model",
                 dtype: torch.dtype | None = torch.float16, max_shard_bytes: int | None = 15 * 2**20,
                 keep_float32: Sequence[str] = (), metadata: dict[str, str] | None = None) -> list[Path]:
    """Write ``state`` as safetensors, floating tensors cast to ``dtype`` (None keeps each one's own).

    ``max_shard_bytes`` None: one ``prefix.safetensors``. Otherwise ``prefix-00001-of-0000N.safetensors``
    files of at most that many bytes each (header included), in the state dict's order, and
    ``prefix.safetensors.index.json``. ``keep_float32``: tensors (a name, or a module prefix such as
    ``"model.encoder"``) stored at their own precision whatever ``dtype``. A value that ``dtype`` cannot represent (float16 overflows past 65504) is a
    WeightsError, not a silent inf. Returns the files written, index last.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: _storage_tensor(k, v, None if _kept(k, keep_float32) else dtype) for k, v in state.items()}
    meta = {"format": "pt", **(metadata or {})}
    if max_shard_bytes is None:
        target = folder / f"{prefix}.safetensors"
        atomic_write(target, lambda p: save_file(tensors, str(p), metadata=meta))
        return [target]
    groups = _pack_shards(tensors, int(max_shard_bytes))
    names = [f"{prefix}-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    for name, group in zip(names, groups):
        part = {k: tensors[k] for k in group}
        atomic_write(folder / name, lambda p, part=part: save_file(part, str(p), metadata=meta))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total, **meta},
             "weight_map": {k: name for name, group in zip(names, groups) for k in group}}
    atomic_write(folder / index_name(prefix), lambda p: Path(p).write_text(json.dumps(index, indent=1) + "\n"))
    return [folder / n for n in names] + [folder / index_name(prefix)]


def _kept(name: str, keep: Sequence[str]) -> bool:
    return any(name == k or name.startswith(k + ".") for k in keep)


def _storage_tensor(name: str, value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    value = value.detach().cpu().contiguous()
    if dtype is None or not value.is_floating_point() or value.dtype == dtype:
        return value
    cast = value.to(dtype)
    if bool((torch.isfinite(value) & ~torch.isfinite(cast)).any()):
        raise WeightsError(f"{name} has values beyond the range of {dtype} (largest |x| "
                           f"{value.abs().max().item():.4g}); store it with another dtype")
    return cast.contiguous()


def _pack_shards(tensors: dict[str, torch.Tensor], limit: int) -> list[list[str]]:
    """Consecutive groups of names whose safetensors file stays within ``limit`` bytes."""
    groups: list[list[str]] = [[]]
    size = _HEADER_SLACK
    for name, t in tensors.items():
        need = t.numel() * t.element_size() + _header_bytes(name, t)
        if need + _HEADER_SLACK > limit:
            raise WeightsError(f"{name} alone needs {need:,} bytes, more than a shard of {limit:,} bytes; "
                               "raise max_shard_bytes")
        if groups[-1] and size + need > limit:
            groups.append([])
            size = _HEADER_SLACK
        groups[-1].append(name)
        size += need
    return groups


# a safetensors header is JSON: per tensor its name, dtype, shape and offsets; plus the metadata
_HEADER_SLACK = 4096


def _header_bytes(name: str, t: torch.Tensor) -> int:
    return len(name) + 64 + 12 * t.ndim


def _shards(file: Path, check_files: bool = True) -> dict[Path, set[str] | None]:
    """The safetensors files behind ``file`` and the names the index assigns to each (None: a
    single file, whatever it holds). ``check_files``: each must exist."""
    if not file.name.endswith(INDEX_SUFFIX):
        if not file.is_file():
            raise FileNotFoundError(f"weights file not found: {file}")
        return {file: None}
    try:
        index = json.loads(file.read_text())
        weight_map = index["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"{file} is not a shard index ({{'weight_map': {{name: file}}}}): {e}") from e
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{file}: 'weight_map' must map tensor names to shard files")
    shards: dict[Path, set[str]] = {}
    for name, shard in weight_map.items():
        # shards are plain file names beside the index: an index must not point elsewhere on disk
        if not isinstance(shard, str) or not _SHARD_NAME.match(shard):
            raise WeightsError(f"{file}: shard {shard!r} of {name!r} is not a .safetensors file name")
        shards.setdefault(file.parent / shard, set()).add(name)
    missing = [p.name for p in shards if not p.is_file()]
    if missing and check_files:
        raise FileNotFoundError(f"{file} lists shards that are not in {file.parent}: {missing}")
    return shards


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{file} is not a valid safetensors file ({e}). Weights are only read from "
                           "safetensors; pickled checkpoints are never loaded") from e


def stored_bytes(state: dict[str, torch.Tensor], dtype: torch.dtype | None = torch.float16) -> int:
    """Tensor bytes of ``state`` stored with ``save_sharded(dtype=...)`` (headers not counted)."""
    return sum(v.numel() * (torch.finfo(dtype).bits // 8 if dtype is not None and v.is_floating_point()
                            else v.element_size()) for v in state.values())


def check_weights_header(file: str | os.PathLike, cls: type, config: VQCTConfig, vocab: Sequence[str] | None) -> None:
    """Compare the tensor names and shapes in the safetensors header(s) of ``file`` (one file, or a
    shard index) with those ``config`` builds, without allocating either: the model is built on the
    meta device and no tensor data is read.

    A config.json with absurd but individually valid sizes (ch=4096, ch_mult=[64, 64, 64]) would
    otherwise allocate and randomly initialise terabytes before its weights were found not to fit.
    """
    file = Path(file)
    shapes: dict[str, tuple[int, ...]] = {}
    for shard, names in _shards(file).items():
        for name, shape in _header_shapes(shard).items():
            if names is not None and name not in names:
                raise WeightsError(f"{shard} holds {name!r}, which {file.name} maps to another shard")
            shapes[name] = shape
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
    def get(fname: str) -> Path:
        try:
            return Path(hf_hub_download(repo_id, fname, **kwargs))
        except HFValidationError as e:
            raise _NotARepoId(f"{repo_id!r} is neither a local folder nor a valid Hub repo id: {e}") from e

    def fail(fname: str, e: Exception) -> OSError:
        if unreachable is not None or hub_offline():
            why = (f"cannot reach the Hugging Face Hub ({one_line(unreachable)})" if unreachable is not None
                   else "HF_HUB_OFFLINE is set")
            return OSError(f"could not get {fname} of {repo_id!r}: {why}, and it is not in the local Hub "
                           "cache. Connect once to download it, or pass a local folder")
        return OSError(f"could not get {fname} of {repo_id!r} from the Hugging Face Hub "
                       f"({one_line(e)}). Check the repo id and your connection, or pass a "
                       "local folder; offline, the files must already be in the Hub cache")

    files = {}
    # network, auth, offline, missing file: all end the same way for the user. hub 2.x raises
    # subclasses of EntryNotFoundError (RemoteEntryNotFoundError online, LocalEntryNotFoundError offline)
    for fname in (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME):
        try:
            files[fname] = get(fname)
        except _NotARepoId:
            raise
        except Exception as e:
            if fname == VOCAB_NAME and isinstance(e, EntryNotFoundError):
                continue  # optional here: from_pretrained decides what a missing one means
            if fname == WEIGHTS_NAME and isinstance(e, EntryNotFoundError):
                try:  # a sharded repo: the index, then every shard it names
                    files.update(_download_shards(repo_id, get))
                    continue
                except _NotARepoId:
                    raise
                except Exception:  # noqa: BLE001 - report the file a user expects, model.safetensors
                    pass
            raise fail(fname, e) from e
    folders = {p.parent for p in files.values()}
    if len(folders) != 1:
        raise OSError(f"Hub files of {repo_id!r} resolved to different snapshots: {folders}")
    return folders.pop()


class _NotARepoId(FileNotFoundError):
    pass


def _download_shards(repo_id: str, get: Any) -> dict[str, Path]:
    index = get(index_name("model"))
    files = {index.name: index}
    for shard in sorted(_shards(index, check_files=False)):
        files[shard.name] = get(shard.name)
    return files


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
