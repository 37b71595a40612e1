"""One way to write a file that a crash can never leave half-written."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable


def atomic_write(target: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename over ``target``.

    The temp file lives in the target's folder, so the rename is atomic: a kill -9 at any moment
    leaves the old file or the new one, never a torn one. The file gets the mode a plain ``open``
    would give (mkstemp makes it 0600, which hides shared models and datasets from other users).
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where possible.

    os.umask can only be read by setting it: between the two calls every thread of the process
    would create files with umask 0 (world-writable). Linux shows it in /proc/self/status (since
    4.7), which is safe to read from any thread; elsewhere fall back to the set-and-restore dance,
    under a lock so at least our own concurrent writes never see each other's temporary 0.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # the most restrictive value while we read: never world-writable files
        os.umask(mask)
    return mask
