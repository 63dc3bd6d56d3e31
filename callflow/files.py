"""Writing a file that may hold a secret or a patient's number: whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with ``data`` (text is UTF-8), fsync'd, with ``mode``
    (owner-only by default): a temporary file beside it, then a rename, so a reader or a
    crash never sees half a file, and the file is never readable by others meanwhile."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file of another mode
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


__all__ = ["write_private"]
