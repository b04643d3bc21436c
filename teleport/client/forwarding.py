"""`tsh ssh -R`, `-D` and `-A`: remote and dynamic (SOCKS) port forwarding and agent forwarding.

`-L` lives beside the session in `teleport.client.ssh`. `-D` runs a SOCKS 4/5 server on this
machine (asyncssh's `forward_socks`) whose connections leave from the node over direct-tcpip;
`-A` forwards the agent of `SSH_AUTH_SOCK`, as OpenSSH's `ssh -A` does, to the node only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import asyncssh

from teleport.errors import AccessDenied, BadParameter


@dataclass(frozen=True)
class RemoteForward:
    """`-R [bind:]port:host:hostport`: the node listens on bind:port, we dial host:hostport."""

    bind: str
    port: int
    dest_host: str
    dest_port: int


@dataclass(frozen=True)
class DynamicForward:
    """`-D [bind:]port`: a local SOCKS server whose connections leave from the node."""

    bind: str
    port: int


def _port(text: str, flag: str, spec: str, expected: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise BadParameter(f"invalid {flag} {spec!r}: expected {expected}")
    return int(text)


def parse_remote(spec: str) -> RemoteForward:
    """Parse `-R [bind_address:]port:host:hostport` as OpenSSH does (default bind: localhost)."""
    expected = "[bind_address:]port:host:hostport"
    parts = spec.split(":")
    if len(parts) == 3:
        parts.insert(0, "localhost")
    if len(parts) != 4 or not parts[2]:
        raise BadParameter(f"invalid -R {spec!r}: expected {expected}")
    return RemoteForward(parts[0] or "localhost", _port(parts[1], "-R", spec, expected), parts[2],
                         _port(parts[3], "-R", spec, expected))


def parse_dynamic(spec: str) -> DynamicForward:
    """Parse `-D [bind_address:]port` (default bind: 127.0.0.1)."""
    expected = "[bind_address:]port"
    bind, _, port = spec.rpartition(":")
    return DynamicForward(bind or "127.0.0.1", _port(port, "-D", spec, expected))


def agent_to_forward() -> str | None:
    """Return the agent socket `-A` forwards, or None (with a warning) when there is none."""
    path = os.environ.get("SSH_AUTH_SOCK")
    if not path:
        print("tsh: -A: no agent to forward (SSH_AUTH_SOCK is not set)", file=sys.stderr)
        return None
    return path


async def start(conn: asyncssh.SSHClientConnection, remote: Sequence[RemoteForward],
                dynamic: Sequence[DynamicForward]) -> None:
    """Ask the node for each remote listener and open each local SOCKS listener."""
    for fwd in remote:
        try:
            listener = await conn.forward_remote_port(fwd.bind, fwd.port, fwd.dest_host,
                                                      fwd.dest_port)
        except asyncssh.ChannelListenError:
            raise AccessDenied(
                f"the node refused -R {fwd.bind}:{fwd.port}: port forwarding is not permitted by "
                "your role, or the port is privileged or already in use there") from None
        if fwd.port == 0:  # as OpenSSH says it, so scripts can read the port
            print(f"Allocated port {listener.get_port()} for remote forward to "
                  f"{fwd.dest_host}:{fwd.dest_port}", file=sys.stderr)
    for dyn in dynamic:
        try:
            await conn.forward_socks(dyn.bind, dyn.port)
        except OSError as err:
            raise BadParameter(f"cannot listen on {dyn.bind}:{dyn.port}: {err.strerror}") from None
