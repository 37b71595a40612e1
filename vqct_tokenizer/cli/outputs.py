"""Where commands may write folders: never into the installed package or the shipped weights by
accident, and never over existing work without ``--force``."""

from __future__ import annotations

import os
from pathlib import Path


def protected_roots() -> list[Path]:
    """The package folder (shipped priors, bundled _weights) and a checkout's weights/ folder."""
    from ..defaults import shipped_weights_dirs

    package = Path(__file__).resolve().parent.parent
    return [package, *(p.resolve() for p in shipped_weights_dirs())]


def check_output_folder(path: str | os.PathLike, force: bool, what: str) -> Path:
    """Refuse (ValueError) an output folder inside the package or weights/, or an existing non-empty
    one, unless ``force``. Called before any work, so a refused command has changed nothing."""
    out = Path(path)
    if force:
        return out
    resolved = out.resolve()  # follows symlinks and "..": a link into the package counts as inside
    for root in protected_roots():
        if resolved == root or root in resolved.parents:
            raise ValueError(
                f"refusing to write the {what} to {out}: it is inside {root}, which belongs to the installed "
                "vqct-tokenizer (shipped models and priors). Files there are replaced by a reinstall or a git "
                "checkout, and they change what the shipped names load. Write it elsewhere, or pass --force "
                "to update the shipped files on purpose")
    if out.is_file():
        raise ValueError(f"{out} is a file; the {what} is a folder. Choose another path, or pass --force")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} already exists and is not empty; writing the {what} there would overwrite "
                         "what it holds. Choose a new folder, or pass --force to overwrite")
    return out
