"""The proxy's SSH server (3023): authenticate the user's certificate, then splice to a node.

Two ways in, both ending in bytes copied to the node (its 3022, or a channel on its reverse
tunnel) with backpressure both ways:
`direct-tcpip` channels (`ssh -J`, asyncssh `tunnel=`) and the `proxy:host:port[@cluster]`
subsystem (`ssh -s proxy:%h:%p` as a ProxyCommand). The node authenticates the user again
and enforces the login; here the certificate only has to be trusted and unexpired.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import asyncssh

from teleport.config.sshalgos import DEFAULT as DEFAULT_ALGORITHMS
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import BadParameter, NotFound, TeleportError
from teleport.events.emitter import Emitter
from teleport.proxy.recording import RecordingProxy
from teleport.sshutils.auth import CertAuthServer, CertChecker, RevocationCheck, never_revoked
from teleport.sshutils.flow import TUNNEL_PKTSIZE, WINDOW
from teleport.sshutils.listener import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_USERS,
    SSHListener,
    server_options,
)
from teleport.sshutils.splice import ChannelSplice, SpliceChannelEvents, forward_over
from teleport.utils.clock import Clock, RealClock

log = logging.getLogger("teleport.proxy")

#: Connect to the node a request names (name, UUID or address, and port): a connected socket,
#: or a TeleportError saying why not (unknown node, no tunnel, unreachable).
#: The third argument is the user's address, which a tunnelled node shows as the client's.
NodeDialer = Callable[[str, int, tuple[str, int]], Awaitable[socket.socket]]
#: Connect to a node of a leaf cluster (cluster, host, port, the user's address) through the
#: leaf's tunnel (`teleport.proxy.tunnel.TunnelServer.dial_cluster`).
ClusterDialer = Callable[[str, str, int, tuple[str, int]], Awaitable[socket.socket]]

SUBSYSTEM_PREFIX = "proxy:"
NO_SHELL = ("teleport: this is a proxy, it runs no shells or commands; reach a node through it "
            "with `ssh -J` or `tsh ssh`\r\n")


class ProxySSHServer(SSHListener["ProxyConnection"]):
    """Serve SSH for users on their way to nodes; an async context manager like NodeServer."""

    def __init__(self, *, host_private_key: bytes, host_cert: str,
                 trusted_user_cas: Callable[[], Sequence[str]], cluster_name: str,
                 dial: NodeDialer, emitter: Emitter, clock: Clock | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_users: int = DEFAULT_MAX_USERS,
                 recording: RecordingProxy | None = None,
                 revoked: RevocationCheck | None = None,
                 dial_cluster: ClusterDialer | None = None,
                 leaves: Callable[[], Collection[str]] = tuple,
                 algorithms: SSHAlgorithms = DEFAULT_ALGORITHMS) -> None:
        self.cluster_name = cluster_name
        self._dial_cluster = dial_cluster
        #: The leaf clusters connected now, whose nodes `name.<leaf>` names.
        self.leaves = leaves
        #: Terminates SSH here when sessions are recorded at the proxy (teleport.proxy.recording).
        self.recording = recording
        self._dial = dial
        self.clock = clock or RealClock()
        self.checker = CertChecker(trusted_cas=trusted_user_cas, emitter=emitter,
                                   clock=self.clock, check_login=False,
                                   revoked=revoked or never_revoked)
        self._options = server_options(host_private_key=host_private_key, host_cert=host_cert,
                                       server_factory=lambda: ProxyConnection(self),
                                       algorithms=algorithms)
        super().__init__("proxy", max_connections, max_users)

    async def dial(self, host: str, port: int, cluster: str = "",
                   orig: tuple[str, int] = ("", 0)) -> socket.socket:
        """Connect to the node a request names, or raise NotFound or ConnectionProblem: one of
        ours, or a leaf cluster's (`@leaf` in the subsystem, or a name ending in `.<leaf>`)."""
        if not cluster:
            leaf = next((name for name in self.leaves() if host.endswith(f".{name}")), "")
            if leaf:
                cluster, host = leaf, host[: -len(leaf) - 1]
        if cluster and cluster != self.cluster_name and self._dial_cluster is not None:
            return await self._dial_cluster(cluster, host, port, orig)
        self.check_cluster(cluster)
        return await self._dial(host, port, orig)

    def check_cluster(self, cluster: str) -> None:
        if cluster and cluster != self.cluster_name:
            raise NotFound(f"cluster {cluster!r} is not known to this proxy")

    def recording_here(self) -> RecordingProxy | None:
        """Return the recording proxy when sessions are recorded here, else None (splice)."""
        return self.recording if self.recording is not None and self.recording.active() else None


class ProxyConnection(CertAuthServer):
    """One user's connection to the proxy."""

    #: The node behind enforces the same revocations and tells the user why: let it speak.
    HANG_UP_GRACE = 1.0

    def __init__(self, proxy: ProxySSHServer) -> None:
        super().__init__(proxy.checker)
        self.proxy = proxy

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self.proxy.admit(self)

    def auth_completed(self) -> None:
        self.proxy.admit_user(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.forget(self)

    def session_requested(self) -> tuple[asyncssh.SSHServerChannel[bytes], ProxySession]:
        assert self.conn is not None
        self.check_refusal()
        return self.conn.create_server_channel(encoding=None), ProxySession(self)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
                             ) -> tuple[asyncssh.SSHTCPChannel[bytes], Awaitable[asyncssh.SSHTCPSession[bytes]]]:
        assert self.conn is not None
        self.check_refusal()
        chan = self.conn.create_tcp_channel(window=WINDOW, max_pktsize=TUNNEL_PKTSIZE)
        return chan, self._forward(dest_host, dest_port)

    async def _forward(self, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        """Splice a direct-tcpip channel to the node it names."""
        try:
            recording = self.proxy.recording_here()
            if recording is not None:
                return await recording.open(host, port)
            sock = await self.proxy.dial(host, port, orig=self.peer())
        except TeleportError as err:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(err)) from None
        return await forward_over(sock)


def parse_subsystem(name: str) -> tuple[str, int, str]:
    """Split `proxy:host[:port][@cluster]` into host, port (0 = any) and cluster."""
    if not name.startswith(SUBSYSTEM_PREFIX):
        raise BadParameter(f"unknown subsystem {name!r}")
    target, _, cluster = name[len(SUBSYSTEM_PREFIX):].partition("@")
    host, port = target, ""
    if target.startswith("["):
        end = target.find("]")
        host, port = target[1:end], target[end + 2:]
    elif target.count(":") == 1:
        host, port = target.split(":")
    if not host or (port and not port.isdigit()):
        raise BadParameter(f"invalid proxy subsystem request {name!r}")
    return host, int(port or 0), cluster


class ProxySession(SpliceChannelEvents, asyncssh.SSHServerSession[bytes]):
    """A session channel: the proxy subsystem spliced to a node, or a polite refusal."""

    def __init__(self, conn: ProxyConnection) -> None:
        self.conn = conn
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.target: tuple[str, int, str] | None = None
        self.splice = ChannelSplice()

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.splice.channel_open(chan)

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int],
                      term_modes: Any) -> bool:
        return True  # accepted so that the refusal below is what the user reads

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        try:
            self.target = parse_subsystem(subsystem)
        except BadParameter as err:
            log.info("refused subsystem from %s: %s", self.conn.remote_addr(), err)
            return False
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        if self.target is None:
            self.chan.write_stderr(NO_SHELL.encode())
            self.chan.exit(1)
            return
        self.conn.proxy.spawn(self._connect(*self.target), "proxy subsystem")

    async def _connect(self, host: str, port: int, cluster: str) -> None:
        assert self.chan is not None
        try:
            recording = self.conn.proxy.recording_here()
            if recording is not None:
                self.conn.proxy.check_cluster(cluster)
                await recording.attach(self.splice, host, port)
                return
            await self.splice.attach(await self.conn.proxy.dial(host, port, cluster,
                                                                orig=self.conn.peer()))
        except (TeleportError, OSError, TimeoutError) as err:
            reason = str(err) or f"timed out connecting to {host}:{port}"
            self.chan.write_stderr(f"teleport: cannot reach {host}: {reason}\r\n".encode())
            self.chan.exit(1)
