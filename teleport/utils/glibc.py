"""glibc's malloc controls, called through ctypes on the process's own C library.

Two opposite uses share it: the daemon gives freed memory back after a burst of load
(`backend.memtrim`), `tsh` keeps it for its bulk data (`sshutils.heap`).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any


def function(name: str, argtypes: list[Any], restype: Any) -> Callable[..., Any] | None:
    """The C library's function `name` with its signature set; None where there is none (not
    Linux, or not glibc: musl has no `malloc_trim`)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        found = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    found.argtypes, found.restype = argtypes, restype
    return found


__all__ = ["function"]
