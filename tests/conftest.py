"""Guards for the machine the suite runs on, shared by every test."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# Sessions in these tests run root's login shell, and root's ~/.bashrc may run `pyenv init`,
# whose rehash takes a lock file for a few milliseconds. A shell killed inside that window
# (the node SIGKILLs a session it cannot record, tests kill whole process trees) leaves the
# lock behind, and from then on every shell waits 60 s for it: every later session test
# times out for a reason that is not its name. A lock older than any rehash is such a leftover.
_PYENV_LOCK = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "shims" / ".pyenv-shim"
_STALE_AFTER_SECONDS = 10.0


def clear_stale_pyenv_lock() -> None:
    """Remove a pyenv rehash lock that no running rehash holds any more."""
    try:
        if time.time() - _PYENV_LOCK.stat().st_mtime > _STALE_AFTER_SECONDS:
            _PYENV_LOCK.unlink()
    except FileNotFoundError:
        pass


@pytest.fixture(autouse=True)
def _no_stale_pyenv_lock() -> None:
    clear_stale_pyenv_lock()
