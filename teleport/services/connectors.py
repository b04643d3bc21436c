"""SSO connectors (`/connectors/<kind>/<name>`): the GitHub and OIDC apps users log in through."""

from __future__ import annotations

from teleport.backend.base import Backend
from teleport.errors import NotFound
from teleport.services.store import ResourceStore
from teleport.types.connectors import Connector, GithubConnector, OIDCConnector


class ConnectorService:
    def __init__(self, backend: Backend) -> None:
        self.github: ResourceStore[GithubConnector] = ResourceStore(
            backend, GithubConnector, "connectors", "github", noun="github connector")
        self.oidc: ResourceStore[OIDCConnector] = ResourceStore(
            backend, OIDCConnector, "connectors", "oidc", noun="oidc connector")

    def store(self, kind: str) -> ResourceStore[GithubConnector] | ResourceStore[OIDCConnector]:
        if kind == "github":
            return self.github
        if kind == "oidc":
            return self.oidc
        raise NotFound(f"no connector kind {kind!r}: use github or oidc")

    async def get(self, kind: str, name: str) -> Connector:
        return await self.store(kind).get(name)

    async def list_all(self) -> list[Connector]:
        """Every connector, GitHub ones first, each kind by name."""
        return [*await self.github.list(), *await self.oidc.list()]
