"""Private folders (0700) and secret files (0600), written atomically."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create path (and parents) as 0700, tightening it if it exists."""
    p = Path(path)
    p.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(p, 0o700)
    return p


def write_secret(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> Path:
    """Write data so that no reader ever sees a partial or world-readable file."""
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, p)
    return p
