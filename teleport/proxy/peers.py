"""Reach a node tunnelled to another proxy: forward the user's connection to that proxy.

A node keeps a tunnel to every proxy, but for a moment after a proxy (re)starts, or while
a balancer keeps sending the node elsewhere, a proxy may be asked for a node whose tunnel
ends at a peer. It then connects to the peer's tunnel address as a tunnel client with its own
proxy certificate (`teleport.sshutils.reversetunnel`) and opens a channel to the node there;
the peer serves it from its own tunnels only, so a request never travels further. One SSH
connection per peer is kept and reused.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

import asyncssh

from teleport.api import proxydial
from teleport.errors import ConnectionProblem
from teleport.sshutils import reversetunnel
from teleport.sshutils.flow import TUNNEL_PKTSIZE, WINDOW
from teleport.sshutils.reversetunnel import PEER_PORT, TunnelClientConnection, TunnelCredentials
from teleport.sshutils.splice import channel_socket
from teleport.types.resources import Server
from teleport.utils.addr import parse_addr
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.proxy.peers")


class PeerDialer:
    """Open connections to nodes over other proxies' tunnels; an async context manager."""

    def __init__(self, creds: TunnelCredentials, proxies: Callable[[], Awaitable[list[Server]]],
                 clock: Clock) -> None:
        self.creds = creds
        self.proxies = proxies
        self.clock = clock
        self._conns: dict[str, TunnelClientConnection] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> PeerDialer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    async def dial(self, host_uuid: str, orig: tuple[str, int]) -> socket.socket:
        """Return a socket to the node over the first peer that has its tunnel."""
        problems = []
        for peer in await self.proxies():
            if peer.metadata.name == self.creds.host_uuid or not peer.spec.peer_addr:
                continue
            try:
                conn = await self._connect(peer)
                return await _open(conn, host_uuid, orig)
            except (OSError, TimeoutError, asyncssh.Error, ConnectionProblem) as err:
                problems.append(f"{peer.spec.hostname}: {err}")
        raise ConnectionProblem(f"node {host_uuid} has no reverse tunnel to any proxy"
                                + (f" ({'; '.join(problems)})" if problems else ""))

    async def _connect(self, peer: Server) -> TunnelClientConnection:
        async with self._lock:
            conn = self._conns.get(peer.metadata.name)
            if conn is not None and not conn.is_closed():
                return conn
            addr = parse_addr(peer.spec.peer_addr, 3024)
            sock = await proxydial.dial_any(addr.host, addr.port)
            conn = await reversetunnel.connect(sock, self.creds, host=addr.host, port=addr.port,
                                               now=self.clock.now)
            if conn.proxy_uuid != peer.metadata.name:
                conn.close()
                raise ConnectionProblem(f"{addr} is proxy {conn.proxy_uuid}, not "
                                        f"{peer.metadata.name}")
            self._conns[peer.metadata.name] = conn
            return conn


async def _open(conn: TunnelClientConnection, host_uuid: str,
                orig: tuple[str, int]) -> socket.socket:
    return await channel_socket(lambda session: conn.create_connection(
        session, host_uuid, PEER_PORT, orig[0], orig[1], window=WINDOW,
        max_pktsize=TUNNEL_PKTSIZE))
