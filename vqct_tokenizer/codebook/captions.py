"""Caption corpora: readers for the layouts image-caption datasets ship in, and corpus fingerprints.

Three layouts are understood, chosen from the path:

* a directory: every ``*.txt`` file below it, in sorted relative-path order, one caption per line
  (the CUB / Oxford-102 ``text_c10`` layout of Reed et al.);
* ``*.json`` / ``*.json.gz``: COCO-format annotations, ``annotations[].caption``;
* anything else: plain text, one caption per line, gzip-compressed when the name ends in ``.gz``.

Blank lines are skipped and surrounding whitespace is stripped, so trailing newlines or
Windows line ends do not create empty captions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Read files in 1 MiB blocks when hashing, so large corpora do not need to fit in memory twice.
_HASH_BLOCK = 1 << 20


@dataclass
class CaptionCorpus:
    """One caption source as it will be recorded in the prior's provenance."""

    name: str  # short name, e.g. "cub" for cub.txt.gz
    path: str  # basename only: absolute paths are machine-specific and do not belong in artifacts
    sha256: str
    captions: list[str]

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def provenance(self) -> dict:
        """The JSON-serialisable record stored in prior.json (captions themselves are not stored)."""
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "num_captions": self.num_captions,
        }


def corpus_name(path: str | os.PathLike) -> str:
    """Short name of a corpus: the basename without caption-file suffixes (``cub.txt.gz`` -> ``cub``)."""
    name = Path(path).name
    for suffix in (".gz", ".json", ".txt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def _open_text(path: Path):
    """Open a possibly gzip-compressed text file as UTF-8."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_json(path: Path) -> bool:
    return path.name.endswith(".json") or path.name.endswith(".json.gz")


#: Longest line accepted as a caption. Lines are read with this bound, so a file (or a gzip bomb)
#: that decompresses to one endless line costs this much memory, not the whole file.
MAX_LINE_CHARS = 1 << 20


def iter_text_captions(path: str | os.PathLike, max_line_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """Stream the captions of a text file, one per line; ``.gz`` files are decompressed as they are
    read, a block at a time, never whole."""
    path = Path(path)
    with _open_text(path) as f:
        number = 0
        while True:
            line = f.readline(max_line_chars + 1)
            if not line:
                return
            number += 1
            if len(line) > max_line_chars and not line.endswith("\n"):
                raise ValueError(f"{path}: line {number} is longer than {max_line_chars:,} characters; "
                                 "a caption file has one caption per line")
            line = line.strip()
            if line:
                yield line


def read_text_captions(path: str | os.PathLike) -> list[str]:
    """One caption per line; ``.gz`` files are streamed (see iter_text_captions)."""
    return list(iter_text_captions(path))


def read_coco_captions(path: str | os.PathLike) -> list[str]:
    """COCO-format JSON: the ``caption`` field of every entry of ``annotations``, in file order."""
    path = Path(path)
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise ValueError(f"{path}: expected a COCO caption file with an 'annotations' list")
    captions = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            raise ValueError(f"{path}: annotations[{i}] has no string 'caption'")
        caption = ann["caption"].strip()
        if caption:
            captions.append(caption)
    return captions


def _txt_files(root: Path) -> list[Path]:
    # Sort by the relative path so that the caption order (and hence the hash) is machine-independent.
    files = [p for p in root.rglob("*.txt") if p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def read_caption_dir(path: str | os.PathLike) -> list[str]:
    """Every ``*.txt`` file below ``path`` (recursively, sorted), one caption per line."""
    root = Path(path)
    files = _txt_files(root)
    if not files:
        raise ValueError(f"{root}: directory contains no .txt caption files")
    captions: list[str] = []
    for file in files:
        captions.extend(read_text_captions(file))
    return captions


def read_captions(path: str | os.PathLike) -> list[str]:
    """Read captions from any supported layout (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"caption source not found: {path}")
    if path.is_dir():
        return read_caption_dir(path)
    if _is_json(path):
        return read_coco_captions(path)
    return read_text_captions(path)


def _hash_file_into(h: "hashlib._Hash", path: Path) -> None:
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)


def corpus_sha256(path: str | os.PathLike) -> str:
    """SHA-256 fingerprint of a caption source.

    For a file, the hash of its bytes (so it matches ``sha256sum``). For a directory, the hash of
    each ``.txt`` file's relative path and content hash, in sorted order, so renaming or editing
    any caption file changes it.
    """
    path = Path(path)
    if not path.is_dir():
        h = hashlib.sha256()
        _hash_file_into(h, path)
        return h.hexdigest()
    outer = hashlib.sha256()
    for file in _txt_files(path):
        inner = hashlib.sha256()
        _hash_file_into(inner, file)
        outer.update(f"{file.relative_to(path).as_posix()}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def load_corpus(path: str | os.PathLike) -> CaptionCorpus:
    """Read a caption source together with its name and fingerprint."""
    path = Path(path)
    captions = read_captions(path)
    return CaptionCorpus(
        name=corpus_name(path),
        path=path.name,
        sha256=corpus_sha256(path),
        captions=captions,
    )
