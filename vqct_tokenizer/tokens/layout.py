"""The token layout: what each id of a (h, w, k+1) token grid means. Defined once, from the config.

    layout = config.token_layout(grid=(8, 8))       # the same as token_layout(config, (8, 8))
    {"axes": ["row", "column", "slot"],
     "groups": [{"name": "adjective", "k": 2, "id_range": [0, 676]},
                {"name": "noun", "k": 1, "id_range": [676, 2178]}],
     "slots": ["adjective", "adjective", "noun"],    # the k+1 ids of a cell, in order
     "tokens_per_cell": 3, "vocab_size": 2178, "downsample_factor": 8,
     "grid": [8, 8]}                                # null: native sizes, each image its own grid

``id_range`` is half-open: ``[start, end)``. The token files of ``vqct encode`` (version 2) and the
manifest of ``vqct encode-dataset`` both record exactly this dict. Version-1 token files recorded
``id_ranges`` ({name: [start, end]}) instead of ``groups``, and axes with a leading "image";
:func:`upgrade_layout` turns them into this form.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..config import LAYOUT_AXES, VQCTConfig
from ..errors import TokenError

AXES = list(LAYOUT_AXES)
#: The fields that belong to the model; ``grid`` (the image size) and ``axes`` do not.
MODEL_FIELDS = ("groups", "slots", "tokens_per_cell", "vocab_size", "downsample_factor")


def token_layout(config: VQCTConfig, grid: Sequence[int] | None = None) -> dict[str, Any]:
    """The layout of ``config``'s token grids; ``grid`` (rows, columns) when every grid has that shape.
    The config builds it (``VQCTConfig.token_layout``), so that config.py needs nothing from here."""
    return config.token_layout(None if grid is None else (grid[0], grid[1]))


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest signed integer type holding every id (signed: readable by torch everywhere)."""
    return np.dtype(np.int16) if vocab_size <= 2 ** 15 else np.dtype(np.int32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_layout(layout: Any) -> None:
    """Raise ValueError naming the first field of a layout (this module's form) that is malformed."""
    if not isinstance(layout, dict):
        raise ValueError(f"layout must be an object, got {type(layout).__name__}")
    k1, grid, groups = layout.get("tokens_per_cell"), layout.get("grid"), layout.get("groups")
    if not _is_int(k1) or k1 < 1:
        raise ValueError("layout.tokens_per_cell must be a positive integer")
    if grid is not None and not (isinstance(grid, list) and len(grid) == 2 and all(_is_int(g) and g > 0 for g in grid)):
        raise ValueError(f"layout.grid must be null or [rows, columns], got {grid!r}")
    if not isinstance(groups, list) or not groups or not all(
            isinstance(g, dict) and isinstance(g.get("name"), str) and _is_int(g.get("k")) and g["k"] > 0
            and isinstance(g.get("id_range"), list) and len(g["id_range"]) == 2 and all(map(_is_int, g["id_range"]))
            for g in groups):
        raise ValueError("layout.groups must be a list of {name, k, id_range}")
    if sum(g["k"] for g in groups) != k1:
        raise ValueError("layout.groups do not add up to tokens_per_cell")


def upgrade_layout(layout: dict[str, Any]) -> dict[str, Any]:
    """A version-1 token file's layout (slots + id_ranges) in this module's form; others unchanged.

    A layout that cannot be converted (hand-made, partial) is returned as it is: its fields are
    still compared one by one by :func:`layout_differences`.
    """
    slots, ranges = layout.get("slots"), layout.get("id_ranges")
    if "groups" in layout or not isinstance(slots, list) or not isinstance(ranges, dict):
        return layout
    names = list(dict.fromkeys(slots))
    if not names or set(names) != set(ranges) or not all(isinstance(r, list) and len(r) == 2 for r in ranges.values()):
        return layout
    upgraded = {
        "axes": list(AXES),
        "groups": [{"name": n, "k": slots.count(n), "id_range": list(ranges[n])} for n in names],
        "slots": list(slots),
        "tokens_per_cell": len(slots),
        "grid": None,  # version 1 did not record it
    }
    upgraded.update({k: layout[k] for k in ("vocab_size", "downsample_factor") if k in layout})
    return upgraded


def layout_differences(stored: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """How a recorded layout disagrees with a model's, as "field: recorded vs model" phrases.

    Only the model's fields count (any grid size decodes); a field the record lacks is not compared.
    """
    stored = upgrade_layout(stored)
    diffs = []
    for key in ("tokens_per_cell", "vocab_size", "downsample_factor", "slots"):
        if key in stored and stored[key] != expected[key]:
            diffs.append(f"{key} {stored[key]!r} vs {expected[key]!r}")
    ranges = {g["name"]: g["id_range"] for g in expected["groups"]}
    if "groups" in stored:
        theirs = stored["groups"] if isinstance(stored["groups"], list) else []
        theirs = {g.get("name"): g for g in theirs if isinstance(g, dict)}
        if set(theirs) != set(ranges):
            diffs.append(f"group names {sorted(map(str, theirs))} vs {sorted(ranges)}")
        for g in expected["groups"]:
            other = theirs.get(g["name"])
            if other is None:
                continue
            for key in ("k", "id_range"):
                if other.get(key) != g[key]:
                    diffs.append(f"{g['name']} {key} {other.get(key)!r} vs {g[key]!r}")
    elif isinstance(stored.get("id_ranges"), dict) and stored["id_ranges"] != ranges:
        diffs.append(f"id_ranges {stored['id_ranges']!r} vs {ranges!r}")
    return diffs


def check_ids(tokens, layout: dict[str, Any], where: str) -> None:
    """TokenError if an id of ``tokens`` (numpy array or tensor, slots last) is outside its group's range."""
    col = 0
    for group in layout["groups"]:
        part = tokens[..., col:col + group["k"]]
        lo, hi = group["id_range"]
        if 0 not in part.shape:
            small, large = int(part.min()), int(part.max())
            if small < lo or large >= hi:
                bad = small if small < lo else large
                raise TokenError(f"{where}: token id {bad} out of range for {group['name']} slots "
                                 f"(columns {col}..{col + group['k'] - 1}): valid ids are [{lo}, {hi})")
        col += group["k"]


__all__ = ["check_ids", "check_layout", "layout_differences", "token_dtype", "token_layout", "upgrade_layout"]
