"""Turn what a user typed after `login@` into the address of a registered node."""

from __future__ import annotations

from teleport.auth.client import AuthClient
from teleport.errors import NotFound
from teleport.utils.addr import parse_addr


class NodeResolver:
    def __init__(self, client: AuthClient, cluster_name: str) -> None:
        self.client = client
        self.cluster_name = cluster_name

    async def resolve(self, host: str, port: int) -> tuple[str, int]:
        """Match by node name, `name.cluster`, host UUID or address; only registered nodes."""
        suffix = f".{self.cluster_name}"
        name = host[: -len(suffix)] if host.endswith(suffix) else host
        nodes = await self.client.list_servers("node")
        for node in nodes:
            addr = parse_addr(node.spec.addr, 3022)
            if name in (node.spec.hostname, node.metadata.name) or \
                    (host == addr.host and port in (0, addr.port)) or host == node.spec.addr:
                return addr.host, addr.port
        raise NotFound(f"node {host!r} is not registered in cluster {self.cluster_name!r}")
