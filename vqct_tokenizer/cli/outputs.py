"""Where commands write: folders never into the installed package or the shipped weights by
accident, and never over existing work without ``--force``; image files atomically, with names
chosen before any work is done."""

from __future__ import annotations

import os
from pathlib import Path

from ..atomic import atomic_write


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


# ---------------------------------------------------------------------------------------- image files
def check_image_output(path: Path) -> None:
    """Fail before any work if ``path`` is a file name PIL cannot write (a name without suffix is a folder)."""
    from PIL import Image

    if _is_directory_target(path):
        return
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write images as {path.suffix!r} ({path}); use .png, .jpg, .webp, ... "
                         "or a directory")


def _is_directory_target(path: Path) -> bool:
    return path.is_dir() or path.suffix == ""


def output_paths(output: Path, count: int, stems: list[str] | None) -> list[Path]:
    """Where to write ``count`` images.

    A directory (existing, or a name without suffix) gets STEM.png per image when the input stems
    are known and distinct, else image_0.png, image_1.png, ...; a file name is used as is for one
    image and becomes NAME_0.SUF, NAME_1.SUF, ... for several.
    """
    if _is_directory_target(output):
        if stems is None or len(set(stems)) != len(stems) or len(stems) != count:
            stems = [f"image_{i}" for i in range(count)]
        return [output / f"{stem}.png" for stem in stems]
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(count)]


def save_image(image, path: Path) -> None:
    """Save a PIL image atomically: a crash leaves an existing file as it was, never a torn one."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions()[path.suffix.lower()]  # the temp name has no image suffix
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))
