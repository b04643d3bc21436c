"""Nodes and proxies that announced themselves recently; entries expire with their TTL."""

from __future__ import annotations

from teleport.backend.base import Backend
from teleport.errors import BadParameter
from teleport.services.store import ResourceStore
from teleport.types.resources import Server


class PresenceService:
    def __init__(self, backend: Backend) -> None:
        self.nodes = ResourceStore(backend, Server, "namespaces", "default", "nodes", noun="node")
        self.proxies = ResourceStore(backend, Server, "proxies", noun="proxy")
        self.auth_servers = ResourceStore(backend, Server, "authservers", noun="auth server")

    def store(self, kind: str) -> ResourceStore[Server]:
        """Return the store for `node`, `proxy` or `auth_server` records."""
        stores = {"node": self.nodes, "proxy": self.proxies, "auth_server": self.auth_servers}
        if kind not in stores:
            raise BadParameter(f"unknown server kind {kind!r}")
        return stores[kind]
