"""``vqct models``: the tokenizers this machine can load without a network.

Shipped models (``defaults.shipped_names``: the wheel's ``_weights/`` or a checkout's ``weights/``) and
VQCT tokenizers in the Hugging Face Hub cache, each with its size on disk, downsampling factor f,
token layout and, where its model card (the folder's README.md) has a metrics table, the PSNR and
SSIM it reports. Nothing is downloaded and no weights are loaded: only config.json and README.md
are read.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

CARD_NAME = "README.md"


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="Hugging Face Hub cache to look in (default: $HF_HUB_CACHE, else "
                             "~/.cache/huggingface/hub)")


@dataclass
class ModelEntry:
    name: str          # what --model takes
    source: str        # "shipped" or "hub cache"
    folder: Path
    size: int          # bytes on disk
    config: object     # VQCTConfig


def run(args: argparse.Namespace) -> int:
    from ..defaults import DEFAULT_MODEL

    entries = shipped_models() + cached_models(args.cache_dir)
    if not entries:
        print("no models found: none is shipped with this install and the Hub cache holds no VQCT tokenizer")
        return 0
    rows = [("model", "source", "size", "f", "resolution", "tokens per cell", "headline figures, from the model card")]
    for e in entries:
        rows.append((e.name + (" (default)" if e.name == DEFAULT_MODEL and e.source == "shipped" else ""),
                     e.source, f"{e.size / 1e6:.1f} MB", str(e.config.downsample_factor), str(e.config.resolution),
                     token_layout_text(e.config), card_headline(e.folder / CARD_NAME, e.name) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print("Load one with --model NAME. Sizes are on disk; f: one cell per f x f pixels; resolution: what --resize "
          "resizes to.")
    return 0


# ---------------------------------------------------------------------------------------- finding models
def shipped_models() -> list[ModelEntry]:
    from ..defaults import DEFAULT_MODEL, find_shipped, shipped_names

    entries = []
    for name in sorted(shipped_names(), key=lambda n: n != DEFAULT_MODEL):  # the default first
        folder = find_shipped(name)
        config = _read_config(folder)
        if folder is not None and config is not None:
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            entries.append(ModelEntry(name, "shipped", folder, size, config))
    return entries


def cached_models(cache_dir: Path | None = None) -> list[ModelEntry]:
    """VQCT tokenizers in the Hub cache: model repos whose snapshot has a config.json this package reads
    and a model.safetensors (other models there, e.g. text encoders, are left out)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.utils import CacheNotFound  # .utils: also on hub 0.23

    if cache_dir is None:  # read now: huggingface_hub reads the variable once, at import
        import huggingface_hub.constants

        cache_dir = os.environ.get("HF_HUB_CACHE") or huggingface_hub.constants.HF_HUB_CACHE
    try:
        cache = scan_cache_dir(cache_dir)
    except (CacheNotFound, ValueError, OSError):  # no cache yet, or not a folder
        return []
    entries = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        # the revision "main" points to, else the newest one
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        folder = Path(revision.snapshot_path)
        config = _read_config(folder)
        if config is not None and (folder / "model.safetensors").is_file():
            entries.append(ModelEntry(repo.repo_id, "hub cache", folder, revision.size_on_disk, config))
    return entries


def _read_config(folder: Path | None):
    from ..config import CONFIG_NAME, VQCTConfig

    if folder is None or not (folder / CONFIG_NAME).is_file():
        return None
    try:
        return VQCTConfig.load(folder / CONFIG_NAME)
    except (OSError, ValueError):  # not a VQCT config, or a broken one: not a model this package loads
        return None


# ---------------------------------------------------------------------------------------- describing them
def token_layout_text(config) -> str:
    """A cell's tokens, e.g. "2 adjectives + 1 noun (A=613, N=1811)" or "1 code (N=1024)"."""
    if config.quantizer == "vq":
        return f"1 code (N={config.num_codes})"
    k = config.k_adjectives
    counts = f"shared codebook of {config.codebook_size}" if config.shared_codebook else \
        f"A={config.num_adjectives}, N={config.num_nouns}"
    return f"{k} adjective{'s' if k > 1 else ''} + 1 noun ({counts})"


def card_headline(card: Path, name: str) -> str | None:
    """"PSNR 21.52 dB, SSIM 0.5500 (open test, 256², N = 200)" from the first metrics table of a model
    card that has a PSNR row: the column headed by the model's name (else the first), and the setting
    from the table's first header cell "metric (...)" (else the section heading above the table)."""
    try:
        lines = card.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for i, line in enumerate(lines):
        if not _cells(line)[0].startswith("PSNR"):
            continue
        start = i
        while start > 0 and lines[start - 1].lstrip().startswith("|"):
            start -= 1
        header = _cells(lines[start])
        short = name.rsplit("/", 1)[-1]
        col = next((j for j, h in enumerate(header) if j and h.split(" ")[0] == short), 1)
        table = {}
        for row in lines[start:]:
            if not row.lstrip().startswith("|"):
                break
            cells = _cells(row)
            table.setdefault(cells[0], cells)
        figures = [f"{metric} {_value(table, key, col)}{unit}" for metric, key, unit in
                   (("PSNR", _cells(line)[0], " dB"), ("SSIM", "SSIM", "")) if _value(table, key, col) is not None]
        if not figures:
            return None
        setting = re.search(r"\((.+)\)", header[0])
        where = setting.group(1) if setting else _heading_above(lines, start)
        return ", ".join(figures) + (f" ({where})" if where else "")
    return None


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not line.startswith("|"):
        return [""]
    return [c.strip() for c in line.strip("|").split("|")]


def _value(table: dict[str, list[str]], key: str, col: int) -> str | None:
    cells = table.get(key)
    if cells is None or col >= len(cells) or not re.match(r"-?\d", cells[col]):
        return None
    return cells[col]


def _heading_above(lines: list[str], index: int) -> str | None:
    for line in reversed(lines[:index]):
        if line.startswith("#"):
            return line.lstrip("#").strip().replace("`", "")
    return None
