"""Where code runs and what it runs with: device choice, library versions, progress bars.

Every module that picks a device, records versions in a report or shows progress uses these, so
"auto" means the same thing in the CLI, evaluation, dataset tokenization and prior building.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch


def resolve_device(device: str | torch.device | None, local_rank: int | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present (``cuda:local_rank`` under torchrun), else the CPU;
    anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16), where oneDNN
    runs bfloat16 convolutions about twice as fast as float32. Read from /proc/cpuinfo (Linux);
    False where it cannot be read."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution, or ``None`` when it is not installed.

    For this package, the version of the code that runs: an editable install's metadata keeps the
    version it was installed at (round 12's reports said 0.5.0 while 0.8.0 ran)."""
    if distribution == "vqct-tokenizer":
        from . import __version__

        return __version__
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """Python's version and each distribution's (``None``: not installed), for reports and metadata."""
    return {"python": platform.python_version(), **{d: package_version(d) for d in distributions}}


class NoProgress:
    """Stands in for a tqdm bar when progress is off or tqdm (optional on the slim install) is missing."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, *args: Any, **kwargs: Any) -> None: ...
    def set_description(self, *args: Any, **kwargs: Any) -> None: ...
    def close(self) -> None: ...

    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc: Any) -> None: ...


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0) -> Any:
    """A tqdm bar on stderr, or a silent stand-in when ``enabled`` is false or tqdm is not installed."""
    if not enabled:
        return NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return NoProgress()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)
