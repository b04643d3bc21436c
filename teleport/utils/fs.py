"""Private folders (0700) and secret files (0600), written atomically."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def ensure_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create path as 0700, tightening it if it exists; missing parents are made 0700 too.

    `mkdir -p` would make the parents with the umask's mode (0755): `data_dir/log/upload`
    would then let every local user list which sessions are being recorded.
    """
    p = Path(path)
    missing = []
    for folder in (p, *p.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    if not p.is_dir():
        raise FileExistsError(errno.EEXIST, "not a folder", str(p))
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
