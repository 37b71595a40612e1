"""The one place that names the default pretrained tokenizer and where shipped weights live."""

from __future__ import annotations

from pathlib import Path

#: Name of the default tokenizer: a folder under ``weights/`` in a source checkout, and the only model
#: the wheel carries (as ``vqct_tokenizer/_weights/``; see setup.py, which reads this name).
#: ``VQCTTokenizer.from_pretrained(DEFAULT_MODEL)`` and the CLI without ``--model`` load it.
DEFAULT_MODEL = "vqct-open-f8"

#: This project's other models. A source checkout keeps them in ``weights/`` beside the default; the
#: wheel leaves them out (PyPI refuses files over 100 MB), so an installed package loads them from a
#: folder path (a checkout's ``weights/<name>``) or from a Hub repo they were pushed to.
CHECKOUT_MODELS = ("baseline-open-f8", "vqct-faces64", "vqgan-faces64")


def shipped_weights_dirs() -> list[Path]:
    """Folders that may hold shipped weights: the installed copy first, then a source checkout's
    (the package's parent folder, when it is a checkout: it has pyproject.toml)."""
    here = Path(__file__).resolve().parent
    dirs = [here / "_weights"]
    if (here.parent / "pyproject.toml").is_file():
        dirs.append(here.parent / "weights")
    return dirs


def find_shipped(name: str) -> Path | None:
    for root in shipped_weights_dirs():
        candidate = root / name
        if (candidate / "config.json").is_file():
            return candidate
    return None


def shipped_names() -> list[str]:
    names: set[str] = set()
    for root in shipped_weights_dirs():
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if (p / "config.json").is_file())
    return sorted(names)


def not_installed_hint(name: str) -> str | None:
    """Why one of this project's models is missing here, and where to get it; None for other names."""
    if name not in CHECKOUT_MODELS or find_shipped(name) is not None:
        return None
    return (f"{name!r} is one of this project's models, but the installed wheel carries only the default "
            f"{DEFAULT_MODEL!r}. The others live in a source checkout's weights/ folder: pass that folder's path "
            f"(from_pretrained('path/to/vqct-tokenizer/weights/{name}'), vqct --model path/to/.../weights/{name}), "
            f"install from the checkout (pip install -e .), or push it to the Hub once and load it by repo id")
