"""Nodes and proxies that announced themselves recently; entries expire with their TTL.

Host names are claimed, one host UUID per name, for as long as the claiming host keeps
announcing itself: a host cannot announce, or join under, a name another live host uses.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from teleport.backend.base import Backend, Item, key
from teleport.errors import AlreadyExists, BadParameter, NotFound
from teleport.services.claims import claim
from teleport.services.store import ResourceStore
from teleport.types.resources import Server


class PresenceService:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.nodes = ResourceStore(backend, Server, "namespaces", "default", "nodes", noun="node")
        self.proxies = ResourceStore(backend, Server, "proxies", noun="proxy")
        self.auth_servers = ResourceStore(backend, Server, "authservers", noun="auth server")

    def store(self, kind: str) -> ResourceStore[Server]:
        """Return the store for `node`, `proxy` or `auth_server` records."""
        stores = {"node": self.nodes, "proxy": self.proxies, "auth_server": self.auth_servers}
        if kind not in stores:
            raise BadParameter(f"unknown server kind {kind!r}")
        return stores[kind]

    @staticmethod
    def _name_key(hostname: str) -> bytes:
        # Hashed: a name is the host's to choose, and may hold any character, `/` included.
        return key("hostnames", hashlib.sha256(hostname.lower().encode()).hexdigest())

    async def hostname_owner(self, hostname: str) -> str | None:
        """Return the UUID of the live host that uses hostname, or None."""
        try:
            return (await self.backend.get(self._name_key(hostname))).value.decode()
        except NotFound:
            return None

    async def claim_hostname(self, hostname: str, host_uuid: str, expires: datetime | None) -> None:
        """Claim hostname for host_uuid until expires; AlreadyExists if another host has it."""
        item = Item(self._name_key(hostname), host_uuid.encode(), expires)
        # Three tries: a claim expiring or released meanwhile is looked at again.
        await claim(self.backend, item, host_uuid, lambda i: i.value.decode(errors="replace"),
                    refuse=lambda holder: AlreadyExists(
                        f"host name {hostname!r} is in use by host {holder}"),
                    busy=f"host name {hostname!r} is changing hands, try again", attempts=3)

    async def release_hostname(self, hostname: str, host_uuid: str) -> None:
        """Give up a name host_uuid announced before, unless another host holds it now."""
        if await self.hostname_owner(hostname) == host_uuid:
            try:
                await self.backend.delete(self._name_key(hostname))
            except NotFound:
                pass
