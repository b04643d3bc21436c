"""Announce a node or proxy to the auth server on an interval, with a TTL.

As Teleport's keep-alives: the whole record goes out when it changed (a label, an address, a
command label's output), after any failure, and every ANNOUNCE_EVERY as a backstop; otherwise
a keep-alive only moves its expiry. At 10,000 nodes that is 2,000 small writes a second instead
of 2,000 validated, re-encoded records, each announced to every watcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from teleport.auth.client import AuthClient
from teleport.errors import NotFound, TeleportError
from teleport.metrics import HEARTBEATS
from teleport.service.health import Health
from teleport.types.resources import Server
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.heartbeat")
HEARTBEAT_INTERVAL = 5.0
# Three missed heartbeats and a host drops out of `tctl nodes ls` and routing.
SERVER_TTL = timedelta(seconds=15)
#: The whole record goes out at least this often even when unchanged: whatever happened to the
#: stored copy (an auth server restored from a backup), it is right again within this time.
ANNOUNCE_EVERY = timedelta(minutes=10)


class Heartbeat:
    """One host's announcements: the whole record or a keep-alive, whichever is due."""

    def __init__(self, client: AuthClient, make_server: Callable[[], Server], clock: Clock,
                 announce_every: timedelta = ANNOUNCE_EVERY) -> None:
        self.client = client
        self.make_server = make_server
        self.clock = clock
        self.announce_every = announce_every
        #: The record last announced whole and accepted (without its expiry); None: send it.
        self._sent: Server | None = None
        self._sent_at = clock.now()
        #: The expiry of the last announcement the auth server accepted, whole or keep-alive.
        self._expires = clock.now()
        #: The kind of record announced (`node`, `proxy`), for metrics and health.
        self.kind = ""

    async def beat(self) -> None:
        """Announce once with an expiry SERVER_TTL from now; raise TeleportError on failure."""
        server = self.make_server()
        self.kind = server.kind
        now = self.clock.now()
        expires = now + SERVER_TTL
        # Past the last accepted expiry the record is gone: a keep-alive would only come back
        # NotFound, a round trip more for a loaded auth server before the whole record.
        if (server == self._sent and now - self._sent_at < self.announce_every
                and now < self._expires):
            try:
                await self.client.keep_alive_server(server.kind, server.metadata.name, expires)
                self._expires = expires
                return
            except NotFound:
                # Expired, removed with `tctl rm`, or the store lost it: announce it whole.
                log.info("the auth server no longer has this %s's record, sending it again",
                         server.kind)
            except TeleportError:
                self._sent = None  # after a failure the next heartbeat sends everything
                raise
        self._sent = None
        meta = server.metadata.model_copy(update={"expires": expires})
        await self.client.upsert_server(server.model_copy(update={"metadata": meta}))
        self._sent, self._sent_at, self._expires = server, now, expires


async def heartbeat_forever(client: AuthClient, make_server: Callable[[], Server], clock: Clock,
                            health: Health, interval: float = HEARTBEAT_INTERVAL) -> None:
    """Keep the server record alive with an expiry; a stopped host drops out after SERVER_TTL.

    A failed heartbeat marks the component not ready: it has lost its auth server. Beats
    start every interval, however long the last one took (never two at once): sleeping the
    interval after a slow answer let a loaded auth server's delays add up to the TTL, and an
    expired record costs it a whole announcement.
    """
    heartbeat = Heartbeat(client, make_server, clock)
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval
        try:
            await heartbeat.beat()
        except TeleportError as err:
            log.warning("heartbeat failed: %s", err)
            HEARTBEATS.labels(heartbeat.kind, "error").inc()
            health.degraded(heartbeat.kind, f"cannot reach the auth server: {err}")
        else:
            HEARTBEATS.labels(heartbeat.kind, "ok").inc()
            health.ok(heartbeat.kind)
        await asyncio.sleep(max(0.0, due - loop.time()))
