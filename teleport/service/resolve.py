"""Turn what a user typed after `login@` into a connection to a registered node."""

from __future__ import annotations

import asyncio
import socket

from teleport.api.proxydial import connect_tcp
from teleport.auth.client import AuthClient
from teleport.cache import CachedAuth
from teleport.cache.index import ServerIndex
from teleport.errors import BadParameter, ConnectionProblem, NotFound
from teleport.proxy.peers import PeerDialer
from teleport.proxy.tunnel import TunnelServer
from teleport.sshutils import clientaddr
from teleport.types.resources import Server
from teleport.utils.addr import parse_addr
from teleport.utils.clock import Clock, RealClock


class NodeResolver:
    def __init__(self, client: AuthClient, cluster_name: str,
                 tunnels: TunnelServer | None = None, peers: PeerDialer | None = None, *,
                 signer: clientaddr.Signer | None = None, clock: Clock | None = None) -> None:
        self.client = client
        self.cluster_name = cluster_name
        self.tunnels = tunnels
        self.peers = peers
        #: Signs the user's address for nodes dialled over TCP (`sshutils.clientaddr`).
        self.signer = signer
        self.clock = clock or RealClock()

    async def dial(self, host: str, port: int, orig: tuple[str, int] = ("", 0)) -> socket.socket:
        """Connect to the node a request names (see resolve_node and dial_node)."""
        return await self.dial_node(await self.resolve_node(host, port), orig)

    async def dial_node(self, node: Server, orig: tuple[str, int] = ("", 0)) -> socket.socket:
        """Connect to a node: over its reverse tunnel when it has one, else to its address.

        orig, the user's address, travels with a tunnel's channel for the node's SSH_CLIENT.
        """
        if node.spec.use_tunnel:
            if self.tunnels is None:
                raise ConnectionProblem(f"node {node.spec.hostname} is reached through a reverse "
                                        "tunnel, and this proxy runs none")
            if self.peers is not None and not self.tunnels.has(node.metadata.name):
                return await self.peers.dial(node.metadata.name, orig)  # its tunnel is elsewhere
            return await self.tunnels.dial(node.metadata.name, orig)
        addr = parse_addr(node.spec.addr, 3022)
        try:
            sock = await connect_tcp(addr.host, addr.port)
        except TimeoutError:
            raise ConnectionProblem(f"timed out connecting to {addr}") from None
        except OSError as err:
            raise ConnectionProblem(f"cannot connect to {addr}: {err}") from None
        if self.signer is not None and orig[0]:
            # The node sees our address; this line tells it the user's, signed by us.
            line = self.signer.header(orig, node.metadata.name, self.clock.now())
            try:
                await asyncio.get_running_loop().sock_sendall(sock, line)
            except OSError as err:
                sock.close()
                raise ConnectionProblem(f"cannot connect to {addr}: {err}") from None
        return sock

    async def resolve_node(self, host: str, port: int) -> Server:
        """Match by node name, `name.cluster`, host UUID or address; only registered nodes.

        The requested port only matters for addresses: `ssh -J` asks for port 22 by default.
        """
        suffix = f".{self.cluster_name}"
        name = host[: -len(suffix)] if host.endswith(suffix) else host
        nodes = await self._nodes()
        by_name, exact, by_addr = nodes.named(name), nodes.at(host, port), nodes.at(host)
        for matches in (by_name, exact, by_addr):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise BadParameter(f"{host!r} matches {len(matches)} nodes; use the node's UUID")
        raise NotFound(f"node {host!r} is not registered in cluster {self.cluster_name!r}")

    async def _nodes(self) -> ServerIndex:
        """The nodes to route with: the proxy's cache's index (no request while its stream is
        live), else the auth server's list, indexed for this one lookup."""
        if isinstance(self.client, CachedAuth):
            return await self.client.nodes()
        return ServerIndex(await self.client.list_servers("node"))
