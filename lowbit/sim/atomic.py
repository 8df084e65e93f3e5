"""Atomic file output: nothing lost or half-written when a command fails (temp file + rename)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write_via(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` on a temp file next to `path`, then rename it into place.

    The temp file gets the ordinary umask-derived mode (mkstemp creates 0600) and is removed on error,
    so readers see either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text or bytes to `path` atomically."""
    if isinstance(data, bytes):
        atomic_write_via(path, lambda tmp: Path(tmp).write_bytes(data))
    else:
        atomic_write_via(path, lambda tmp: Path(tmp).write_text(data))
