"""Nodes and proxies that announced themselves recently; entries expire with their TTL."""

from __future__ import annotations

from teleport.backend.base import Backend
from teleport.services.store import ResourceStore
from teleport.types.resources import Server


class PresenceService:
    def __init__(self, backend: Backend) -> None:
        self.nodes = ResourceStore(backend, Server, "namespaces", "default", "nodes", noun="node")
        self.proxies = ResourceStore(backend, Server, "proxies", noun="proxy")
