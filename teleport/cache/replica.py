"""Keep a copy of what proxies read from the auth API, to answer from while it is unreachable.

Polled rather than fed by watch streams: the auth API has no watch route yet. Presence is read
through while the auth server answers, so a node that just joined is routable at once; the copy,
refreshed every few seconds, is what routing falls back on during an outage. CAs and the ping
answer change rarely and are served from the copy.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import aiohttp

from teleport.api.auth_models import PingAnswer
from teleport.auth.client import AuthClient
from teleport.errors import TeleportError
from teleport.types.resources import CertAuthority, Server
from teleport.utils.addr import HostPort

log = logging.getLogger("teleport.cache")
REFRESH_INTERVAL = 5.0
SERVER_KINDS = ("node", "proxy", "auth_server")
CA_TYPES = ("user", "host", "tls")
# A server dying mid-answer shows up as a payload or JSON error, not only as one of ours.
_FAILED = (TeleportError, aiohttp.ClientError, ValueError)


class CachedAuth(AuthClient):
    """An auth client that answers presence, CA and ping reads from its copy when it must.

    A subclass rather than a wrapper so that every caller typed for `AuthClient` (the resolver,
    the web proxy, the trusted CAs) takes it unchanged; writes are inherited and still go to the
    auth server. Until the first copy arrives, reads go through to the auth server.
    """

    def __init__(self, addrs: list[HostPort], ssl_context: ssl.SSLContext, timeout: float = 30.0,
                 *, cluster: str, interval: float = REFRESH_INTERVAL) -> None:
        super().__init__(addrs, ssl_context, timeout, cluster=cluster)
        self.interval = interval
        self.outage = False
        self._ping: PingAnswer | None = None
        self._servers: dict[str, list[Server]] = {}
        self._cas: dict[str, CertAuthority] = {}

    async def refresh(self) -> bool:
        """Copy everything from the auth server at once; on failure keep the last good copy."""
        try:
            ping = await AuthClient.ping(self)
            servers = {kind: await AuthClient.list_servers(self, kind) for kind in SERVER_KINDS}
            cas = {ca_type: await AuthClient.get_ca(self, ca_type) for ca_type in CA_TYPES}
        except _FAILED as err:
            self._lost(err)
            return False
        if self.outage:
            log.info("auth server is back, cache refreshed")
        self._ping, self._servers, self._cas, self.outage = ping, servers, cas, False
        return True

    async def run(self) -> None:
        """Refresh now and then every interval, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def _lost(self, err: Exception) -> None:
        if not self.outage:
            log.warning("cannot refresh the cache, serving the last known copy: %s", err)
        self.outage = True

    async def ping(self) -> PingAnswer:
        """Return the cluster's ping answer from the copy: the web proxy's ping needs no auth server."""
        if self._ping is None:
            return await super().ping()
        return self._ping

    async def get_ca(self, ca_type: str) -> CertAuthority:
        """Return a CA's public keys from the copy, so trust survives an outage."""
        if ca_type not in self._cas:
            return await super().get_ca(ca_type)
        return self._cas[ca_type]

    async def list_servers(self, kind: str = "node", user: str = "") -> list[Server]:
        """Return kind's live records, or during an outage the last known ones even if expired.

        Hosts cannot heartbeat while the auth server is down, so their records would all expire
        together; routing to the last known hosts is what keeps a brief outage invisible. The
        nodes a user may see are the auth server's answer only (it judges their roles).
        """
        if user:
            return await super().list_servers(kind, user)
        copy = self._servers.get(kind)
        if copy is not None and self.outage:
            return list(copy)
        try:
            servers = await super().list_servers(kind)
        except _FAILED as err:
            if copy is None:
                raise
            self._lost(err)
            return list(copy)
        if kind in SERVER_KINDS:
            self._servers[kind] = servers
        return servers
