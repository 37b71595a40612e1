"""Read tokenized images back: the folder of ``encode_dataset`` or a token file of ``vqct encode``.

    from vqct_tokenizer import load_token_dataset
    ds = load_token_dataset("tokens/")           # or "tokens.pt" / "tokens.json" / "tokens.npy"
    ds[0], ds["cat/001.jpg"], len(ds)            # LongTensor (h, w, k+1), like VQCTTokenizer.encode

Both give the same interface: index or source path, ``items()``, ``paths``, ``image_size``,
``layout`` (``VQCTConfig.token_layout``), ``model``, ``config_hash`` and ``failures``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import TokenError
from .files import TOKEN_SUFFIXES, read_token_file
from .shards import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, SETTINGS_NAME, check_manifest, read_json, \
    read_shard_tokens


def _key(path: str | os.PathLike) -> str:
    return Path(path).as_posix()


class _TokenGrids:
    """Access by index or source path to ``images`` (dicts with "path" and "size"); subclasses give ``_grid``."""

    images: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    layout: dict[str, Any] | None
    model: str | None
    config_hash: str | None
    source_root: Path | None = None
    _where: Path  # what error messages name

    def _index_paths(self) -> None:
        self._by_path: dict[str, int] = {}
        for i, entry in enumerate(self.images):
            self._by_path.setdefault(_key(entry["path"]), i)  # a path listed twice: the first occurrence

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | str | os.PathLike) -> torch.Tensor:
        return self._grid(self.index_of(key) if isinstance(key, (str, os.PathLike)) else self._check_index(key))

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(len(self)):
            yield self._grid(i)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(source path, tokens) for every encoded image, in input order."""
        for i in range(len(self)):
            yield self.images[i]["path"], self._grid(i)

    @property
    def paths(self) -> list[str]:
        return [e["path"] for e in self.images]

    def image_size(self, key: int | str | os.PathLike) -> tuple[int, int]:
        """Original (H, W) of an image: pass it to ``decode(image_size=...)`` for --native tokens."""
        i = self.index_of(key) if isinstance(key, (str, os.PathLike)) else self._check_index(key)
        if self.images[i]["size"] is None:
            raise ValueError(f"{self._where} does not record image sizes (a .npy file holds only the tokens)")
        h, w = self.images[i]["size"]
        return int(h), int(w)

    def index_of(self, path: str | os.PathLike) -> int:
        key = _key(path)
        if key in self._by_path:
            return self._by_path[key]
        rel = None
        if self.source_root is not None:
            try:  # an absolute (or cwd-relative) path to a file under the source folder
                rel = Path(path).resolve().relative_to(self.source_root.resolve()).as_posix()
            except ValueError:
                rel = None
            if rel is not None and rel in self._by_path:
                return self._by_path[rel]
        failed = next((f for f in self.failures if _key(f["path"]) in (key, rel)), None)
        if failed is not None:
            raise KeyError(f"{path} could not be encoded: {failed['error']}")
        raise KeyError(f"{path} is not in {self._where}")

    def _check_index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an int or a source path, got {type(i).__name__}")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {n} images")
        return int(i) % n

    def _grid(self, i: int) -> torch.Tensor:
        raise NotImplementedError


class TokenDataset(_TokenGrids):
    """The output of ``encode_dataset``: token grids of the encoded images, in input order.

    ``ds[i]`` (an int) or ``ds[path]`` (a source path as listed in the manifest, or that path
    resolved against the source folder) gives a LongTensor (h, w, k+1), the same as
    ``VQCTTokenizer.encode(path)``. ``len(ds)`` counts encoded images; unreadable inputs are in
    ``ds.failures``. Shards are read one at a time (the last one is cached) and checked as they are
    read: a token file of the wrong dtype, rank, shape or id range raises TokenError (a ValueError).
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        path = self._where = self.out_dir / MANIFEST_NAME
        if not path.is_file():
            hint = " (the run has not finished: rerun encode-dataset to complete it)" \
                if (self.out_dir / SETTINGS_NAME).is_file() else ""
            raise FileNotFoundError(f"no {MANIFEST_NAME} in {self.out_dir}{hint}")
        manifest = read_json(path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a {FORMAT_NAME} manifest")
        version = manifest.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {version!r}; upgrade vqct-tokenizer to read it")
        check_manifest(manifest, path)
        self.manifest = manifest
        self.layout = manifest["layout"]
        self.model: str = manifest["model"]
        self.config_hash: str = manifest["config_hash"]
        self.images = manifest["images"]
        self.failures = manifest["failures"]
        self.source_root = Path(manifest["source_root"])
        self._index_paths()
        for name in manifest["shards"]:
            if not (self.out_dir / name).is_file():
                raise FileNotFoundError(f"{self.out_dir / name} listed in the manifest is missing; rerun the same "
                                        "encode-dataset command into this folder to encode that shard again")
        self._rows = Counter(entry["shard"] for entry in self.images)  # encoded images per shard
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def validate(self) -> None:
        """Read and check every shard (one at a time) instead of on first use."""
        for i in range(len(self.manifest["shards"])):
            self._shard(i)

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.out_dir)!r}, images={len(self)}, failed={len(self.failures)}, model={self.model!r})"

    def _grid(self, i: int) -> torch.Tensor:
        entry = self.images[i]
        data = self._shard(entry["shard"])
        row = entry["row"]
        if "tokens" in data:
            if not 0 <= row < data["tokens"].shape[0]:
                raise TokenError(f"{self._shard_file(entry['shard'])} has no row {row} (image {entry['path']})")
            grid = data["tokens"][row]
        else:
            offsets = data["offsets"]
            if not 0 <= row < len(offsets) - 1:
                raise TokenError(f"{self._shard_file(entry['shard'])} has no grid {row} (image {entry['path']})")
            h, w = data["grid_shapes"][row]
            grid = data["cells"][offsets[row]:offsets[row + 1]].reshape(int(h), int(w), -1)
        return torch.from_numpy(grid.astype(np.int64))

    def _shard_file(self, shard: int) -> Path:
        return self.out_dir / self.manifest["shards"][shard]

    def _shard(self, shard: int) -> dict[str, np.ndarray]:
        if self._cache is not None and self._cache[0] == shard:
            return self._cache[1]
        data = read_shard_tokens(self._shard_file(shard), self.layout, self._rows[shard])
        self._cache = (shard, data)
        return data


class TokenFileDataset(_TokenGrids):
    """A token file of ``vqct encode`` (.pt, .json or .npy) with the interface of TokenDataset.

    Images are named by their recorded paths (a .npy file records none: "image_0", "image_1", ...).
    The file is read and checked whole when opened; ``failures`` is empty (``vqct encode`` stops at
    the first unreadable image).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = self._where = Path(path)
        self.stored = stored = read_token_file(self.path)
        self.layout, self.model, self.config_hash = stored.layout, stored.model, stored.config_hash
        names = stored.image_paths or [f"image_{i}" for i in range(len(stored.grids))]
        sizes = stored.image_sizes or [None] * len(stored.grids)
        self.images = [{"path": p, "size": list(s) if s is not None else None} for p, s in zip(names, sizes)]
        self.failures = []
        self._index_paths()

    def validate(self) -> None:
        """Nothing left to check: the file was read and checked when opened."""

    def __repr__(self) -> str:
        return f"TokenFileDataset({str(self.path)!r}, images={len(self)}, model={self.model!r})"

    def _grid(self, i: int) -> torch.Tensor:
        return self.stored.grids[i].clone()  # callers may edit it; the file stays as read


def load_token_dataset(path: str | os.PathLike) -> TokenDataset | TokenFileDataset:
    """Open the output folder of ``vqct encode-dataset`` / ``encode_dataset``, or a token file of
    ``vqct encode`` (a path ending in .pt, .json or .npy)."""
    p = Path(path)
    if p.suffix.lower() in TOKEN_SUFFIXES and not p.is_dir():
        return TokenFileDataset(p)
    return TokenDataset(p)


__all__ = ["TokenDataset", "TokenFileDataset", "load_token_dataset"]
