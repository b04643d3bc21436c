"""Turn what a user typed after `login@` into the address of a registered node."""

from __future__ import annotations

from teleport.auth.client import AuthClient
from teleport.errors import BadParameter, NotFound
from teleport.types.resources import Server
from teleport.utils.addr import parse_addr


class NodeResolver:
    def __init__(self, client: AuthClient, cluster_name: str) -> None:
        self.client = client
        self.cluster_name = cluster_name

    async def resolve(self, host: str, port: int) -> tuple[str, int]:
        """Return the address of the node a request names (see resolve_node)."""
        return _dial(await self.resolve_node(host, port))

    async def resolve_node(self, host: str, port: int) -> Server:
        """Match by node name, `name.cluster`, host UUID or address; only registered nodes.

        The requested port only matters for addresses: `ssh -J` asks for port 22 by default.
        """
        suffix = f".{self.cluster_name}"
        name = host[: -len(suffix)] if host.endswith(suffix) else host
        nodes = await self.client.list_servers("node")
        by_name = [n for n in nodes if name in (n.spec.hostname, n.metadata.name)]
        by_addr = [n for n in nodes if parse_addr(n.spec.addr, 3022).host == host]
        exact = [n for n in by_addr if parse_addr(n.spec.addr, 3022).port == port]
        for matches in (by_name, exact, by_addr):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise BadParameter(f"{host!r} matches {len(matches)} nodes; use the node's UUID")
        raise NotFound(f"node {host!r} is not registered in cluster {self.cluster_name!r}")


def _dial(node: Server) -> tuple[str, int]:
    addr = parse_addr(node.spec.addr, 3022)
    return addr.host, addr.port
