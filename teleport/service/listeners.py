"""Listening sockets the process owns, so a restart can hand them to its successor.

On USR2 or HUP the daemon starts a new copy of itself with its listening sockets inherited
(named in `TELEPORT_INHERITED_LISTENERS=auth=3,node=4`); the new process serves new
connections on them at once, without a moment when the ports are closed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from teleport.api.constants import INHERITED_LISTENERS_ENV, LISTEN_BACKLOG
from teleport.errors import BadParameter
from teleport.utils.addr import HostPort

BACKLOG = LISTEN_BACKLOG  # servers of these sockets pass it again when they listen


class Listeners:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._inherited: dict[str, int] = {}
        for item in filter(None, env.get(INHERITED_LISTENERS_ENV, "").split(",")):
            name, _, fd = item.partition("=")
            if not fd.isdigit():
                raise BadParameter(f"{INHERITED_LISTENERS_ENV}: invalid entry {item!r}")
            self._inherited[name] = int(fd)
        self.sockets: dict[str, socket.socket] = {}

    def get(self, name: str, addr: HostPort) -> socket.socket:
        """Return the inherited socket for name, or bind a new one on addr."""
        fd = self._inherited.pop(name, None)
        if fd is not None:
            sock = socket.socket(fileno=fd)
        else:
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            sock = socket.create_server((addr.host, addr.port), family=family, backlog=BACKLOG)
        sock.setblocking(False)
        self.sockets[name] = sock
        return sock

    def close_unused(self) -> None:
        """Close inherited sockets this process did not take (a role was turned off)."""
        for fd in self._inherited.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._inherited.clear()

    def spawn_successor(self) -> subprocess.Popen[bytes]:
        """Start a new copy of this daemon with the same arguments and our listening sockets."""
        fds = {name: sock.fileno() for name, sock in self.sockets.items()}
        env = dict(os.environ)
        env[INHERITED_LISTENERS_ENV] = ",".join(f"{name}={fd}" for name, fd in fds.items())
        for fd in fds.values():
            os.set_inheritable(fd, True)
        return subprocess.Popen([sys.executable, *sys.argv], env=env, pass_fds=list(fds.values()),
                                stdin=subprocess.DEVNULL)
