"""asyncssh for `tsh`, without the start-up work it does for features `tsh` never uses.

At import asyncssh looks for optional native libraries with `ctypes.util.find_library`
(liboqs twice, nettle twice), which on Linux runs `ldconfig -p` and then, for each library not
installed, `gcc` and `ld`: seven processes, 40-60 ms of every `tsh ssh`. It also imports
python-fido2 for hardware-backed (`sk-`) SSH keys, another 50 ms, and pyOpenSSL for X.509
certificates in SSH (RFC 6187), ~15 ms; `tsh` signs with the software key and OpenSSH
certificate of its profile, and runs python-fido2 itself only for WebAuthn
(`teleport.client.keyflow`, which imports it when a login asks for a key).

`load()` imports asyncssh once with both answered cheaply: the native libraries from one
`ldconfig -p` (what find_library reads first anyway; a library it does not list is taken as
absent, as asyncssh then does without it), and python-fido2 and pyOpenSSL taken as absent for
asyncssh's own import only. The daemon imports asyncssh plainly. The lasting fix is upstream: asyncssh
could look these up on first use of post-quantum key exchange, UMAC or an `sk-` key.

`load()` also keeps freed buffers in the heap (`teleport.sshutils.heap`): bulk data through
`tsh` otherwise faults a fresh page in for every 4 KiB of most of its per-packet buffers.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import re
import subprocess
import sys
from collections.abc import Iterator

from teleport.sshutils import heap


def load() -> None:
    """Import asyncssh (a no-op once it is imported), for a process that moves bulk data."""
    heap.keep_freed_memory()
    if "asyncssh" in sys.modules:
        return
    with _libraries_from_ldconfig(), _without("fido2"), _without("OpenSSL"):
        import asyncssh  # noqa: F401


@contextlib.contextmanager
def _libraries_from_ldconfig() -> Iterator[None]:
    listing: list[str] = []

    def find_library(name: str) -> str | None:
        if not listing:
            try:
                listing.append(subprocess.run(
                    ["ldconfig", "-p"], capture_output=True, text=True, timeout=5,
                    env={"LC_ALL": "C", "LANG": "C", "PATH": "/sbin:/usr/sbin:/usr/bin:/bin"},
                ).stdout)
            except (OSError, subprocess.SubprocessError):
                listing.append("")
        found = re.search(rf"^\s+(lib{re.escape(name)}\.\S+)\s", listing[0], re.MULTILINE)
        return found.group(1) if found else None

    real = ctypes.util.find_library
    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = real


@contextlib.contextmanager
def _without(package: str) -> Iterator[None]:
    """Make `package` unimportable inside the block (unless it is imported already)."""
    if package in sys.modules:
        yield
        return
    sys.modules[package] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        if sys.modules.get(package, ...) is None:
            del sys.modules[package]
