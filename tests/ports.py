"""Ports for tests without bind-and-release: nothing else can take a port while a test holds it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def refused_port() -> Iterator[int]:
    """Yield a loopback port that refuses connections for as long as the block runs.

    The socket stays bound but never listens, so a connection gets a reset at once and no other
    process can start listening there meanwhile (a port that was bound and closed again could be
    taken by anyone before the test dials it).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def listening_ports(pid: int) -> list[int]:
    """Return the TCP ports process pid listens on, read from /proc (Linux).

    For programs started on port 0 that do not print the port they bound (OpenSSH's sshd,
    `tsh ssh -L 0:...`): the kernel picked the port, so nothing can race for it.
    """
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                # local_address is ADDR:PORT in hex, state 0A is LISTEN, field 9 the inode.
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


def wait_listening(pid: int, timeout: float = 20) -> int:
    """Wait until process pid listens on exactly one TCP port; return it."""
    deadline = time.monotonic() + timeout
    while True:
        ports = listening_ports(pid)
        if len(ports) == 1:
            return ports[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} listens on {ports or 'no port'} after {timeout}s")
        time.sleep(0.1)
