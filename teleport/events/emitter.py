"""Build audit events with the manual's fields and hand them to a sink.

One interface for every producer (auth, node, proxy): `await emitter.emit(event)`. A node or
proxy's emitter forwards to the auth API; the auth server's writes the day files.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from teleport.utils.clock import Clock, RealClock

# Event types from the manual's table.
AUTH = "auth"
USER_LOGIN = "user.login"
SESSION_START = "session.start"
SESSION_END = "session.end"
SESSION_JOIN = "session.join"
SESSION_LEAVE = "session.leave"
EXEC = "exec"
SCP = "scp"
RESIZE = "resize"
PORT_FORWARD = "port"
# Not in the manual's table: a host joined the cluster with a token.
HOST_JOIN = "join"

AuditEvent = dict[str, Any]


class Emitter(Protocol):
    async def emit(self, event: Mapping[str, Any]) -> None:
        """Record one event durably; raise ConnectionProblem if it could not be stored."""
        ...


def make_event(event_type: str, clock: Clock | None = None, **fields: Any) -> AuditEvent:
    """Return an event with type, unique id and UTC time set, plus the given fields.

    Field names with dots (`addr.remote`) are passed as `addr_remote` and renamed here.
    """
    now: datetime = (clock or RealClock()).now()
    event: AuditEvent = {
        "event": event_type,
        "uid": str(uuid.uuid4()),
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    for name, value in fields.items():
        event[name.replace("addr_", "addr.")] = value
    return event


class MemoryEmitter:
    """Keep events in a list: for tests and for components with no durable sink yet."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def emit(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))

    def of_type(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.events if e["event"] == event_type]
