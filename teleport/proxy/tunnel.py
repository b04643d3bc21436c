"""The proxy's reverse tunnel server (3024, or the multiplexed web port).

Nodes that cannot be reached dial in with their host certificate (`teleport.sshutils.
reversetunnel` has the wire contract) and stay connected. The proxy keeps the newest tunnel
per host UUID and reaches the node by opening a channel on it (`dial`); the node reaches the
auth API through it. A tunnel serves only the host UUID of its certificate. Other proxies of
the cluster connect here too, with their own certificate, to reach the nodes tunnelled here
(`teleport.proxy.peers`), and so do the proxies of leaf clusters that trust this one: the root
reaches a leaf's nodes through it (`teleport.sshutils.clusterdial`), the leaf reaches nothing here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncssh

from teleport.config.sshalgos import DEFAULT as DEFAULT_ALGORITHMS
from teleport.config.sshalgos import SSHAlgorithms
from teleport.errors import ConnectionProblem, NotFound
from teleport.events.emitter import Emitter
from teleport.metrics import REVERSE_TUNNELS
from teleport.rbac.subject import Caller
from teleport.sshutils import clusterdial
from teleport.sshutils.auth import CertAuthServer, CertChecker
from teleport.sshutils.flow import TUNNEL_PKTSIZE, WINDOW
from teleport.sshutils.listener import (
    DEFAULT_MAX_CONNECTIONS,
    SSHListener,
    server_options,
)
from teleport.sshutils.reversetunnel import (
    AUTH_TARGET,
    NODE_LISTEN,
    PEER_PORT,
    check_agent,
    host_role,
)
from teleport.sshutils.splice import (
    SpliceTCPSession,
    channel_socket,
    forward_over,
    forward_to,
)
from teleport.utils.addr import HostPort
from teleport.utils.clock import Clock, RealClock

log = logging.getLogger("teleport.reversetunnel")

#: How long opening a channel to a node on its tunnel may take.
OPEN_TIMEOUT = 15.0


class TunnelServer(SSHListener["TunnelConnection"]):
    """Accept nodes' reverse tunnels and open connections to them; an async context manager."""

    def __init__(self, *, host_private_key: bytes, host_cert: str,
                 trusted_host_cas: Callable[[], Sequence[str]], cluster_name: str,
                 auth_addrs: Callable[[], Sequence[HostPort]], emitter: Emitter,
                 clock: Clock | None = None,
                 remote_host_cas: Callable[[], Mapping[str, Sequence[str]]] = dict,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 algorithms: SSHAlgorithms = DEFAULT_ALGORITHMS) -> None:
        self.cluster_name = cluster_name
        self.auth_addrs = auth_addrs
        self.clock = clock or RealClock()
        def every_host_ca() -> list[str]:
            return [*trusted_host_cas(), *(k for keys in remote_host_cas().values() for k in keys)]

        self.checker = CertChecker(trusted_cas=every_host_ca, emitter=emitter,
                                   clock=self.clock, check_login=False, cert_type="host",
                                   accept=check_agent(cluster_name, remote_host_cas))
        #: The ready tunnel of each host UUID (the newest when a node reconnected).
        self.tunnels: dict[str, TunnelConnection] = {}
        #: The ready tunnel of each leaf cluster (the newest when its proxy reconnected).
        self.clusters: dict[str, TunnelConnection] = {}
        self._options = server_options(host_private_key=host_private_key, host_cert=host_cert,
                                       server_factory=lambda: TunnelConnection(self),
                                       algorithms=algorithms)
        # Every agent is one user to the connection limits; max_users would cap nodes.
        super().__init__("reversetunnel", max_connections, max_connections)

    def has(self, host_uuid: str) -> bool:
        return host_uuid in self.tunnels

    def register(self, conn: TunnelConnection) -> None:
        """Make conn the route to its node; an older tunnel of the same node is closed."""
        host_uuid = conn.host_uuid
        old = self.tunnels.get(host_uuid)
        if old is conn:
            return  # a repeated `tcpip-forward` on the same tunnel: already the route, counted
        self.tunnels[host_uuid] = conn
        if old is not None:
            log.info("node %s reconnected its tunnel; closing the older one", host_uuid)
            old.close()
        else:
            REVERSE_TUNNELS.inc()
        log.info("reverse tunnel from node %s (%s) is up", host_uuid, conn.remote_addr())

    def register_cluster(self, conn: TunnelConnection) -> None:
        """Make conn the route to its leaf cluster; an older tunnel of the leaf is closed."""
        old = self.clusters.get(conn.remote_cluster)
        if old is conn:
            return
        self.clusters[conn.remote_cluster] = conn
        if old is not None:
            old.close()
        log.info("leaf cluster %s connected its tunnel (%s)", conn.remote_cluster,
                 conn.remote_addr())

    def unregister(self, conn: TunnelConnection) -> None:
        if conn.remote_cluster and self.clusters.get(conn.remote_cluster) is conn:
            del self.clusters[conn.remote_cluster]
            log.info("leaf cluster %s's tunnel is down", conn.remote_cluster)
        if conn.host_uuid and self.tunnels.get(conn.host_uuid) is conn:
            del self.tunnels[conn.host_uuid]
            REVERSE_TUNNELS.dec()
            log.info("reverse tunnel from node %s is down", conn.host_uuid)

    async def dial(self, host_uuid: str, orig: tuple[str, int] = ("", 0)) -> socket.socket:
        """Return a socket whose far end is the node's SSH server, over its tunnel.

        A socket, like a dialled node's, so the splice, the recording proxy and asyncssh take
        either the same way; a socket pair's other end is spliced to the tunnel's channel.
        """
        conn = self.tunnels.get(host_uuid)
        if conn is None or conn.conn is None:
            raise ConnectionProblem(f"node {host_uuid} has no reverse tunnel to this proxy")
        ssh = conn.conn
        try:
            return await asyncio.wait_for(channel_socket(lambda session: ssh.create_connection(
                session, *NODE_LISTEN, *orig, window=WINDOW, max_pktsize=TUNNEL_PKTSIZE)),
                OPEN_TIMEOUT)
        except (asyncssh.Error, OSError, TimeoutError) as err:
            reason = str(err) or "timed out"
            raise ConnectionProblem(f"cannot reach node {host_uuid} over its tunnel: {reason}") from None

    async def dial_cluster(self, cluster: str, host: str, port: int,
                           orig: tuple[str, int] = ("", 0)) -> socket.socket:
        """Return a socket whose far end is a leaf cluster's node, through the leaf's proxy."""
        conn = self.clusters.get(cluster)
        if conn is None or conn.conn is None:
            raise NotFound(f"cluster {cluster!r} is offline or not a leaf of this cluster")
        ssh = conn.conn
        try:
            sock = await asyncio.wait_for(channel_socket(lambda session: ssh.create_connection(
                session, *clusterdial.CLUSTER_LISTEN, *orig, window=WINDOW,
                max_pktsize=TUNNEL_PKTSIZE)), OPEN_TIMEOUT)
        except (asyncssh.Error, OSError, TimeoutError) as err:
            reason = str(err) or "timed out"
            raise ConnectionProblem(f"cannot reach cluster {cluster!r} over its tunnel: "
                                    f"{reason}") from None
        try:
            await clusterdial.request(sock, clusterdial.DialRequest(host, port, orig))
        except BaseException:
            sock.close()
            raise
        return sock

    async def leaf_cas(self, cluster: str) -> bytes:
        """The leaf's own host, user and TLS CAs as its proxy tells them (a JSON list)."""
        sock = await self.dial_cluster(cluster, *clusterdial.CAS_TARGET)
        try:
            return await clusterdial.read_all(sock)
        except OSError as err:
            raise ConnectionProblem(f"cannot read cluster {cluster!r}'s CAs: {err}") from None
        finally:
            sock.close()

    def snapshot(self) -> list[str]:
        """The host UUIDs tunnelled here now."""
        return sorted(self.tunnels)


class _VirtualListener:
    """What asyncssh records for an accepted `tcpip-forward`: nothing listens, we open channels."""

    def __init__(self, port: int) -> None:
        self._port = port

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


class TunnelConnection(CertAuthServer):
    """One node's tunnel."""

    def __init__(self, server: TunnelServer) -> None:
        super().__init__(server.checker)
        self.server = server
        #: The node this tunnel serves, once authenticated with a node certificate.
        self.host_uuid = ""
        #: Another proxy of the cluster, connected to reach the nodes tunnelled here.
        self.peer_proxy = ""
        #: A leaf cluster whose proxy connected, so that we reach its nodes.
        self.remote_cluster = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        super().connection_made(conn)
        self.server.admit(self)

    def auth_completed(self) -> None:
        assert self.identity is not None
        role, authority = host_role(self.identity.cert)
        if role == Caller.PROXY.value and authority != self.server.cluster_name:
            self.remote_cluster = authority  # the checker tied it to the leaf's host CA
        elif role == Caller.PROXY.value:
            self.peer_proxy = self.identity.cert.key_id
        else:
            self.host_uuid = self.identity.cert.key_id

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.server.unregister(self)
        self.server.forget(self)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        """Take the node's `tcpip-forward` for NODE_LISTEN as its word that it serves SSH now
        (a leaf's proxy: CLUSTER_LISTEN, that it dials its nodes for us)."""
        if self.refusal is not None:
            return False
        if self.remote_cluster and (listen_host, listen_port) == clusterdial.CLUSTER_LISTEN:
            self.server.register_cluster(self)
            return _VirtualListener(listen_port)
        if not self.host_uuid:
            return False
        if (listen_host, listen_port) != NODE_LISTEN:
            log.info("node %s asked to forward %s:%s; refused", self.host_uuid, listen_host,
                     listen_port)
            return False
        self.server.register(self)
        return _VirtualListener(listen_port)

    def session_requested(self) -> bool:
        return False  # a tunnel runs no shells

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Any:
        """A node reaches the auth API, a peer proxy a node tunnelled here; nothing else."""
        self.check_refusal()
        assert self.conn is not None
        if self.peer_proxy and dest_port == PEER_PORT:
            chan = self.conn.create_tcp_channel(window=WINDOW, max_pktsize=TUNNEL_PKTSIZE)
            return chan, self._to_node(dest_host, (orig_host, orig_port))
        if not self.host_uuid or (dest_host, dest_port) != AUTH_TARGET:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"a tunnel reaches only {AUTH_TARGET[0]}")
        chan = self.conn.create_tcp_channel(window=WINDOW, max_pktsize=TUNNEL_PKTSIZE)
        return chan, self._to_auth()

    async def _to_node(self, host_uuid: str, orig: tuple[str, int]) -> SpliceTCPSession:
        """For a peer proxy: the node's tunnel here, never a further hop (no loops)."""
        try:
            sock = await self.server.dial(host_uuid, orig)
        except ConnectionProblem as err:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(err)) from None
        return await forward_over(sock)

    async def _to_auth(self) -> SpliceTCPSession:
        problems = []
        for addr in self.server.auth_addrs():
            try:
                return await forward_to(addr.host, addr.port)
            except asyncssh.ChannelOpenError as err:
                problems.append(err.reason)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                        "; ".join(problems) or "no auth server is known")


