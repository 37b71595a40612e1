"""Atomic, rotating training checkpoints.

Written to a temp file in the same folder and renamed, so a kill -9 at any moment leaves either the
previous complete checkpoint or the new complete one, never a torn file. Loaded with
``weights_only=True``: checkpoints hold tensors and plain Python values only, nothing to unpickle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write

_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temp files of an interrupted save are ignored)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if _NAME.match(p.name))


def find_latest(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(out_dir: str | Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(out_dir, step)
    atomic_write(target, lambda tmp: torch.save(state, tmp))
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            old.unlink(missing_ok=True)
    for stale in out_dir.glob(".ckpt_*.tmp"):  # left by a killed save
        stale.unlink(missing_ok=True)
    return target


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint (ckpt_XXXXXXXX.pt) in {path}")
        path = latest
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ValueError(f"{path} is not a readable training checkpoint ({type(e).__name__}: {e})") from e
