"""Keep a copy of what proxies read from the auth API, to answer from while it is unreachable.

Fed by the auth API's watch stream (`GET /v1/watch`): it opens with a snapshot of the nodes,
proxies, auth servers and CA public keys, then carries every change (a heartbeat, an expired
record as a delete, a CA rotation), so the copy follows the cluster within a second and no
read waits for the auth server. A lost stream is opened again with a backoff from the last change
the copy applied, and the auth server sends only what changed since (from any auth server on a
shared etcd or PostgreSQL); when it no longer can (an sqlite auth server restarted, history
compacted or pruned, a migrated store), the copy is replaced by the new stream's snapshot, and a
stream that fell behind (the auth server ends it) heals the same way. The ping answer (the cluster's
authentication settings and connectors) is not a watched kind: it is fetched at each
(re)connection and every PING_INTERVAL seconds, so a new connector shows within seconds; it
carries no records, so nothing here re-reads the nodes on a timer, however many there are.

Each kind's records are kept in a `ServerIndex` (by UUID, hostname and address), so routing a
connection to a node is a lookup in the copy (`nodes`), never a list of every node.

While the stream is not live, presence is read through when the auth server answers; when it
does not, the last copy serves routing, even past expiry: nobody can heartbeat during an outage,
so every record would expire together. The nodes a user may see are always the auth server's
answer (it judges their roles).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from teleport.api.auth_models import PingAnswer, WatchEvent
from teleport.auth.client import AuthClient
from teleport.cache.index import ServerIndex
from teleport.errors import ConnectionProblem, TeleportError
from teleport.types.codec import from_dict
from teleport.types.resources import CertAuthority, Server
from teleport.utils.addr import HostPort

log = logging.getLogger("teleport.cache")
SERVER_KINDS = ("node", "proxy", "auth_server")
CA_TYPES = ("user", "host", "tls")
#: What the copy follows on the watch stream.
FOLLOWED = (*SERVER_KINDS, "cert_authority")
#: Opening a lost stream again waits this long at first, doubling up to RETRY_MAX: never
#: longer than the 5 s poll this replaced, so an auth server that is back is noticed as soon.
RETRY_MIN = 0.5
RETRY_MAX = 5.0
PING_INTERVAL = 5.0
# A server dying mid-answer shows up as a payload or JSON error, not only as one of ours.
_FAILED = (TeleportError, OSError, ValueError)

Servers = dict[str, ServerIndex]


class CachedAuth(AuthClient):
    """An auth client that answers presence, CA and ping reads from its copy when it can.

    A subclass rather than a wrapper so that every caller typed for `AuthClient` (the resolver,
    the web proxy, the trusted CAs) takes it unchanged; writes are inherited and still go to the
    auth server. Until the first copy arrives, reads go through to the auth server.
    """

    def __init__(self, addrs: list[HostPort], ssl_context: ssl.SSLContext, timeout: float = 30.0,
                 *, cluster: str, retry_max: float = RETRY_MAX) -> None:
        super().__init__(addrs, ssl_context, timeout, cluster=cluster)
        self.cluster_name = cluster
        self.retry_max = retry_max
        #: The auth server did not answer the last attempt: reads are served from the copy.
        self.outage = False
        #: The copy follows a live watch stream: reads are served from it.
        self.live = False
        self._ping: PingAnswer | None = None
        self._servers: Servers = {}
        self._cas: dict[str, CertAuthority] = {}
        self._subscribers: list[Callable[[str], None]] = []
        #: Where the copy stands in the stream (the last `revision` applied), to resume from.
        self._cursor = ""

    def subscribe(self, changed: Callable[[str], None]) -> None:
        """Call changed(kind) after every change the copy takes, e.g. to use new CA keys now."""
        self._subscribers.append(changed)

    def copy(self, kind: str) -> list[Server]:
        """Return the copy's records of kind as they are, without asking the auth server."""
        copy = self._servers.get(kind)
        return [] if copy is None else copy.values()

    async def refresh(self) -> bool:
        """Read everything from the auth server at once; on failure keep the last good copy."""
        try:
            ping = await AuthClient.ping(self)
            servers = {kind: ServerIndex(await AuthClient.list_servers(self, kind))
                       for kind in SERVER_KINDS}
            cas = {ca_type: await AuthClient.get_ca(self, ca_type) for ca_type in CA_TYPES}
        except _FAILED as err:
            self._lost(err)
            return False
        self._replace(ping, servers, cas)
        return True

    async def run(self) -> None:
        """Follow the watch stream and refresh the ping answer until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow_forever(), name="cache watch")
            group.create_task(self._ping_forever(), name="cache ping")

    async def _ping_forever(self) -> None:
        """Keep the ping answer fresh; an unreachable auth server is the stream's to report."""
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if self.live:
                try:
                    self._ping = await AuthClient.ping(self)
                except _FAILED as err:
                    log.debug("cannot refresh the ping answer: %s", err)

    async def _follow_forever(self) -> None:
        """Follow the watch stream, opening it again after a backoff when lost."""
        delay = RETRY_MIN
        while True:
            try:
                await self._follow()
            except _FAILED as err:
                if self.live:
                    log.info("lost the auth server's watch stream, following it again: %s", err)
                else:
                    self._lost(err)
            if self.live:  # it was working: try again at once, not after the last backoff
                delay = RETRY_MIN
            self.live = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def _follow(self) -> None:
        """Take the stream's snapshot as the new copy, then apply its changes as they come; a
        stream resumed from the last change applied keeps the copy and sends what it missed."""
        ping = await AuthClient.ping(self)
        servers: Servers = {kind: ServerIndex() for kind in SERVER_KINDS}
        cas: dict[str, CertAuthority] = {}
        async for event in self.watch(FOLLOWED, since=self._cursor):
            if self.live:
                self._apply(event, self._servers, self._cas)
                self._notify(event.kind)
            elif event.type == "init":
                if event.resumed:
                    self._resumed(ping)
                else:
                    self._replace(ping, servers, cas)
                self.live = True
            else:
                self._apply(event, servers, cas)
            if event.revision:
                self._cursor = event.revision
        raise ConnectionProblem("the auth server ended the watch stream")

    def _apply(self, event: WatchEvent, servers: Servers, cas: dict[str, CertAuthority]) -> None:
        """Apply one put or delete (a repeat of one already applied changes nothing)."""
        if event.kind in SERVER_KINDS:
            if event.type == "delete":
                servers[event.kind].delete(event.name)
            elif event.type == "put":
                servers[event.kind].put(_resource(event, Server))
        elif event.kind == "cert_authority" and event.sub_kind in CA_TYPES \
                and event.name == self.cluster_name:
            if event.type == "delete":
                cas.pop(event.sub_kind, None)
            elif event.type == "put":
                cas[event.sub_kind] = _resource(event, CertAuthority)

    def _resumed(self, ping: PingAnswer) -> None:
        if self.outage:
            log.info("auth server is back, following its changes from where the cache stopped")
        else:
            log.debug("watch stream resumed from where the cache stopped")
        self._ping, self.outage = ping, False

    def _replace(self, ping: PingAnswer, servers: Servers, cas: dict[str, CertAuthority]) -> None:
        if self.outage:
            log.info("auth server is back, cache refreshed")
        else:
            log.debug("watch stream opened with a snapshot")
        self._ping, self._servers, self._cas, self.outage = ping, servers, cas, False
        for kind in FOLLOWED:
            self._notify(kind)

    def _notify(self, kind: str) -> None:
        for changed in self._subscribers:
            changed(kind)

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
        """Return kind's records as the stream last said, or read them through while it is
        down; during an outage the last known ones even if expired.

        The nodes a user may see are the auth server's answer only (it judges their roles).
        """
        if user:
            return await super().list_servers(kind, user)
        copy = self._servers.get(kind)
        if copy is not None and (self.live or self.outage):
            return copy.values()
        try:
            servers = await super().list_servers(kind)
        except _FAILED as err:
            if copy is None:
                raise
            self._lost(err)
            return copy.values()
        if kind in SERVER_KINDS and not self.live:  # a live stream's copy is newer by now
            self._servers[kind] = ServerIndex(servers)
        return servers

    async def nodes(self) -> ServerIndex:
        """Return the nodes indexed for routing: the copy's, with no request, while the stream
        is live or the auth server unreachable; else read through (as list_servers does).

        Routing looks a node up here for every connection, so this never lists every node
        while the stream is live.
        """
        copy = self._servers.get("node")
        if copy is not None and (self.live or self.outage):
            return copy
        listed = await self.list_servers("node")
        copy = self._servers.get("node")
        return copy if copy is not None else ServerIndex(listed)


def _resource(event: WatchEvent, model: type[Any]) -> Any:
    """Decode a put's record, refusing one of another kind (not from a Teleport auth server)."""
    resource = from_dict(event.resource, "auth server's watch stream")
    if not isinstance(resource, model) or isinstance(resource, Server) and (
            resource.kind, resource.metadata.name) != (event.kind, event.name):
        raise ConnectionProblem(f"the auth server's watch stream sent a {resource.kind} "
                                f"for {event.kind} {event.name!r}")
    return resource
