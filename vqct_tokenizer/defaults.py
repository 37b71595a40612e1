"""The one place that names the default pretrained tokenizer and where shipped weights live."""

from __future__ import annotations

from pathlib import Path

#: Name of the default tokenizer: a folder under ``weights/`` in a source checkout, bundled in the
#: wheel as ``vqct_tokenizer/_weights/``. ``VQCTTokenizer.from_pretrained(DEFAULT_MODEL)`` and the CLI
#: without ``--model`` load it.
DEFAULT_MODEL = "vqct-open-f8"


def shipped_weights_dirs() -> list[Path]:
    """Folders that may hold shipped weights: the installed copy first, then a source checkout's."""
    here = Path(__file__).resolve().parent
    return [here / "_weights", here.parent / "weights"]


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
