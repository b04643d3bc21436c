"""Announce a node or proxy to the auth server on an interval, with a TTL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from teleport.auth.client import AuthClient
from teleport.errors import TeleportError
from teleport.metrics import HEARTBEATS
from teleport.service.health import Health
from teleport.types.resources import Server
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.heartbeat")
HEARTBEAT_INTERVAL = 5.0
# Three missed heartbeats and a host drops out of `tctl nodes ls` and routing.
SERVER_TTL = timedelta(seconds=15)


async def heartbeat_forever(client: AuthClient, make_server: Callable[[], Server], clock: Clock,
                            health: Health, interval: float = HEARTBEAT_INTERVAL) -> None:
    """Upsert the server record with an expiry; a stopped host drops out after SERVER_TTL.

    A failed heartbeat marks the component not ready: it has lost its auth server.
    """
    while True:
        server = make_server()
        meta = server.metadata.model_copy(update={"expires": clock.now() + SERVER_TTL})
        try:
            await client.upsert_server(server.model_copy(update={"metadata": meta}))
        except TeleportError as err:
            log.warning("heartbeat failed: %s", err)
            HEARTBEATS.labels(server.kind, "error").inc()
            health.degraded(server.kind, f"cannot reach the auth server: {err}")
        else:
            HEARTBEATS.labels(server.kind, "ok").inc()
            health.ok(server.kind)
        await asyncio.sleep(interval)
