"""Trusted clusters in the proxy: the tunnels between a leaf and its roots.

As a leaf, each of our proxies keeps one reverse tunnel to every enabled root (`RootTunnels`,
the roots as our auth server lists them every few seconds): it dials the root's tunnel address
with its own proxy certificate (the re-issued one after our host CA's rotation), accepts only a
proxy certificate of that root's host CA, and asks for `clusterdial.CLUSTER_LISTEN`. On each
channel the root opens it reads the dial line and dials our node as for our own users (or our
auth server, for a root user's own TLS), then splices; or it answers our CAs, so the root
follows our rotations. A root disabled or removed has its tunnel closed at the next look.

As a leaf's auth server, `AuthClientCAs` keeps the roots' TLS CAs among those its API checks
client certificates against (the roots' users call it through the tunnel with their own
certificates: `tsh ls --cluster`, `tsh play`), next to its own CAs as they rotate.

As a root, `report_leaves` tells our auth server every few seconds which leaves' tunnels this
proxy holds (their `remote_cluster` status) and the CAs each leaf says it has now; a leaf the
auth server no longer knows (`tctl rm rc/<leaf>`) has its tunnel closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from teleport.api.auth_models import LeafTunnel
from teleport.api.proxydial import connect_tcp
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer
from teleport.auth.trustedclusters import HEARTBEAT_INTERVAL, ROOTS_REUSE
from teleport.errors import ConnectionProblem, NotFound, TeleportError
from teleport.keys.authname import auth_server_name
from teleport.keys.tlsconfig import LiveServerContext
from teleport.proxy.tunnel import TunnelServer
from teleport.service.tunnels import DEFAULT_TUNNEL_PORT, TunnelPool, tunnel_addr
from teleport.sshutils import clusterdial
from teleport.sshutils.reversetunnel import AUTH_TARGET, TunnelCredentials
from teleport.types.codec import to_dict
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
                 host_cas: Callable[[], dict[str, list[str]]], dial: Dial, clock: Clock, *,
                 dial_auth: Callable[[], Awaitable[socket.socket]]) -> None:
        self.client = client
        #: Our auth server, for a root's users calling our auth API (`AUTH_TARGET`).
        self.dial_auth = dial_auth
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

    def use_identity(self, private_key: str, cert: str) -> None:
        """Dial with a re-issued certificate from now on (our host CA's rotation)."""
        self.creds = dataclasses.replace(self.creds, private_key=private_key, cert=cert)
        for _, pool, _ in self.pools.values():
            pool.creds = dataclasses.replace(pool.creds, private_key=private_key, cert=cert)

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
            if (want.host, want.port) == clusterdial.CAS_TARGET:
                await self._send_cas(sock)
                return
            if (want.host, want.port) == AUTH_TARGET:
                node = await self.dial_auth()
            else:
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


    async def _send_cas(self, sock: socket.socket) -> None:
        """Tell the root our own CAs (public halves), so it follows our rotations."""
        try:
            cas = [to_dict((await self.client.get_ca(t)).without_secrets())
                   for t in ("host", "user", "tls")]
            await clusterdial.answer(sock, None)
            await asyncio.get_running_loop().sock_sendall(sock, json.dumps(cas).encode())
        finally:
            sock.close()


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


def leaf_auth_dialer(tunnels: TunnelServer) -> Callable[[str], Awaitable[socket.socket] | None]:
    """For the web port's auth relay: a TLS server name naming a connected leaf's auth server
    is dialled over that leaf's tunnel."""

    def dial(server_name: str) -> Awaitable[socket.socket] | None:
        for leaf in list(tunnels.clusters):
            if server_name == auth_server_name(leaf):
                return tunnels.dial_cluster(leaf, *AUTH_TARGET)
        return None

    return dial


async def dial_first(addrs: Sequence[HostPort]) -> socket.socket:
    """Connect to the first of our auth servers that accepts."""
    problems = []
    for addr in addrs:
        try:
            return await connect_tcp(addr.host, addr.port)
        except (OSError, TimeoutError) as err:
            problems.append(f"{addr}: {err}")
    raise ConnectionProblem("cannot reach the auth server: " + ("; ".join(problems) or
                                                                 "no address known"))


class AuthClientCAs:
    """The CA certificates the auth API checks client certificates against: ours (as a
    rotation changes them) and the trusted roots' TLS CAs (as trust is made or removed)."""

    def __init__(self, auth: AuthServer, tls: LiveServerContext) -> None:
        self.auth = auth
        self.tls = tls
        self.own = tls.client_ca_pems
        self.roots: list[bytes] = []

    def set_own(self, pems: Sequence[bytes]) -> None:
        self.own = list(pems)
        self.tls.update(client_ca_pems=[*self.own, *self.roots])

    async def follow(self) -> None:
        """Follow the roots' TLS CAs, within ROOTS_REUSE of a change."""
        while True:
            roots = [c.encode() for ca in await self.auth.trusted_clusters.root_tls_cas()
                     for c in ca.trusted_tls_certs()]
            if roots != self.roots:
                self.roots = roots
                self.tls.update(client_ca_pems=[*self.own, *self.roots])
            await asyncio.sleep(ROOTS_REUSE)


async def report_leaves(client: AuthClient, tunnels: TunnelServer) -> None:
    """Tell our auth server which leaves' tunnels we hold and their CAs as they say them now
    (a leaf's CA rotation reaches us so); close the tunnels of leaves it no longer knows."""
    while True:
        for name, conn in list(tunnels.clusters.items()):
            try:
                await client.remote_cluster_heartbeat(name)
                await client.update_leaf_cas(name, json.loads(await tunnels.leaf_cas(name)))
            except NotFound:
                log.info("leaf cluster %s was removed; closing its tunnel", name)
                conn.close()
            except (TeleportError, ValueError) as err:
                log.warning("cannot follow leaf cluster %s: %s", name, err)
        await asyncio.sleep(HEARTBEAT_INTERVAL)
