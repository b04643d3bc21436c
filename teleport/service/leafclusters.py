"""Trusted clusters in the proxy: the tunnels between a leaf and its roots.

As a leaf, each of our proxies keeps one reverse tunnel to every enabled root (`RootTunnels`,
the roots as our auth server lists them every few seconds): it dials the root's tunnel address
with its own proxy certificate, accepts only a proxy certificate of that root's host CA, and
asks for `clusterdial.CLUSTER_LISTEN`. On each channel the root opens it reads the dial line,
dials our node as for our own users and splices. A root disabled or removed has its tunnel
closed at the next look.

As a root, `report_leaves` tells our auth server every few seconds which leaves' tunnels this
proxy holds (their `remote_cluster` status); a leaf the auth server no longer knows (`tctl rm
rc/<leaf>`) has its tunnel closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable

from teleport.api.auth_models import LeafTunnel
from teleport.auth.client import AuthClient
from teleport.auth.trustedclusters import HEARTBEAT_INTERVAL
from teleport.errors import NotFound, TeleportError
from teleport.proxy.tunnel import TunnelServer
from teleport.service.tunnels import DEFAULT_TUNNEL_PORT, TunnelPool, tunnel_addr
from teleport.sshutils import clusterdial
from teleport.sshutils.reversetunnel import TunnelCredentials
from teleport.utils.addr import HostPort, parse_addr
from teleport.utils.clock import Clock
from teleport.utils.supervisor import Supervisor

log = logging.getLogger("teleport.reversetunnel")

#: Dial one of our nodes as the leaf's proxy does for its own users (host, port, user address).
Dial = Callable[[str, int, tuple[str, int]], Awaitable[socket.socket]]
#: How often the leaf looks for roots added, disabled or removed.
LOOK_INTERVAL = 2.0
COPY_CHUNK = 64 * 1024


class RootTunnels:
    """A leaf proxy's tunnels to its roots; an async context manager whose `run` is supervised."""

    def __init__(self, client: AuthClient, creds: TunnelCredentials,
                 host_cas: Callable[[], dict[str, list[str]]], dial: Dial, clock: Clock) -> None:
        self.client = client
        self.creds = creds
        self.host_cas = host_cas
        self.dial = dial
        self.clock = clock
        self.pools: dict[str, tuple[LeafTunnel, TunnelPool, asyncio.Task[None | None]]] = {}
        self.tasks = Supervisor("cluster dials")

    async def __aenter__(self) -> RootTunnels:
        await self.tasks.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for name in list(self.pools):
            await self._stop(name)
        await self.tasks.close()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TeleportError):
                await self.follow(await self.client.leaf_tunnels())
            await asyncio.sleep(LOOK_INTERVAL)

    async def follow(self, roots: list[LeafTunnel]) -> None:
        """Open a tunnel to each root listed, close the others (and those whose address moved)."""
        wanted = {root.name: root for root in roots}
        for name, (root, _, _) in list(self.pools.items()):
            if wanted.get(name) != root:
                log.info("closing the tunnel to root cluster %s", name)
                await self._stop(name)
        for name, root in wanted.items():
            if name not in self.pools:
                await self._start(root)

    async def _start(self, root: LeafTunnel) -> None:
        name = root.name
        creds = dataclasses.replace(self.creds, cluster=name,
                                    trusted_host_cas=lambda: self.host_cas().get(name, []))

        async def locate() -> HostPort:
            if root.tunnel_addr:
                return parse_addr(root.tunnel_addr, DEFAULT_TUNNEL_PORT)
            return await tunnel_addr(parse_addr(root.web_proxy_addr, 3080))

        pool = TunnelPool(locate, creds, self.clock, self._serve,
                          listen=clusterdial.CLUSTER_LISTEN)
        await pool.__aenter__()
        task = self.tasks.spawn(pool.run(), f"tunnel to root cluster {name}")
        if task is None:  # closing down
            await pool.close()
            return
        self.pools[name] = (root, pool, task)
        log.info("keeping a tunnel to root cluster %s", name)

    async def _stop(self, name: str) -> None:
        _, pool, task = self.pools.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.close()

    async def _serve(self, sock: socket.socket, orig: tuple[str, int]) -> None:
        if self.tasks.spawn(self._dial_for_root(sock), "cluster dial") is None:
            sock.close()

    async def _dial_for_root(self, sock: socket.socket) -> None:
        """Read the root's dial line, dial our node, answer, then copy both ways."""
        try:
            want = clusterdial.DialRequest.decode(await clusterdial.read_line(sock))
            node = await self.dial(want.host, want.port, want.client)
        except TeleportError as err:
            with contextlib.suppress(OSError):
                await clusterdial.answer(sock, str(err))
            sock.close()
            return
        try:
            await clusterdial.answer(sock, None)
            await _splice(sock, node)
        finally:
            sock.close()
            node.close()


async def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both sides are done, passing each half-close on."""
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)

    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(COPY_CHUNK):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            writer.close()

    await asyncio.gather(copy(ra, wb), copy(rb, wa))
    wa.close()
    wb.close()


async def report_leaves(client: AuthClient, tunnels: TunnelServer) -> None:
    """Tell our auth server which leaves' tunnels we hold; close those it no longer knows."""
    while True:
        for name, conn in list(tunnels.clusters.items()):
            try:
                await client.remote_cluster_heartbeat(name)
            except NotFound:
                log.info("leaf cluster %s was removed; closing its tunnel", name)
                conn.close()
            except TeleportError as err:
                log.debug("cannot report leaf cluster %s: %s", name, err)
        await asyncio.sleep(HEARTBEAT_INTERVAL)
