"""Build audit events with the manual's fields and hand them to a sink.

One interface for every producer (auth, node, proxy): `await emitter.emit(event)`. A node or
proxy's emitter forwards to the auth API; the auth server's writes the day files.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from teleport.errors import AccessDenied, BadParameter
from teleport.types.shapes import AuditEvent
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
# Changes made with tctl, named as Teleport names them; `user` is who made the change.
USER_CREATE = "user.create"
USER_UPDATE = "user.update"
USER_DELETE = "user.delete"
JOIN_TOKEN_CREATE = "join_token.create"
JOIN_TOKEN_DELETE = "join_token.delete"
RESET_PASSWORD_TOKEN_CREATE = "reset_password_token.create"
RESET_PASSWORD_TOKEN_DELETE = "reset_password_token.delete"
ROLE_CREATED = "role.created"  # a role created or changed (Teleport writes both so)
ROLE_DELETED = "role.deleted"
LOCK_CREATED = "lock.created"
LOCK_DELETED = "lock.deleted"
GITHUB_CREATED = "github.created"  # SSO connectors, created or changed, as Teleport names them
GITHUB_DELETED = "github.deleted"
OIDC_CREATED = "oidc.created"
OIDC_DELETED = "oidc.deleted"
MFA_ADD = "mfa.add"  # a user's second-factor device added or removed (`tsh mfa`, the web UI)
MFA_DELETE = "mfa.delete"
# Trusted clusters: a leaf's trust created, changed or removed; on the root, a leaf's token
# validated (or refused) and a leaf removed (`tctl rm rc/<leaf>`).
TRUSTED_CLUSTER_CREATE = "trusted_cluster.create"
TRUSTED_CLUSTER_DELETE = "trusted_cluster.delete"
TRUSTED_CLUSTER_VALIDATE = "trusted_cluster_token.validate"
REMOTE_CLUSTER_DELETE = "remote_cluster.delete"
ADMIN_CHANGES = frozenset({USER_CREATE, USER_UPDATE, USER_DELETE, JOIN_TOKEN_CREATE,
                           JOIN_TOKEN_DELETE, RESET_PASSWORD_TOKEN_CREATE,
                           RESET_PASSWORD_TOKEN_DELETE, ROLE_CREATED, ROLE_DELETED,
                           LOCK_CREATED, LOCK_DELETED, GITHUB_CREATED, GITHUB_DELETED,
                           OIDC_CREATED, OIDC_DELETED, TRUSTED_CLUSTER_CREATE,
                           TRUSTED_CLUSTER_DELETE, TRUSTED_CLUSTER_VALIDATE,
                           REMOTE_CLUSTER_DELETE})
#: Recorded by the auth server itself only: a host sending one would be forging it.
AUTH_SERVER_ONLY = frozenset({USER_LOGIN, HOST_JOIN, MFA_ADD, MFA_DELETE, *ADMIN_CHANGES})
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: How late a host's event may arrive and keep the time the host gave it: a node or proxy spools
#: events while its auth server is away (teleport.events.buffered) and sends them when it returns.
HOST_TIME_MAX_AGE = timedelta(hours=72)
#: How far ahead of the auth server's clock a host's clock may run.
HOST_TIME_MAX_SKEW = timedelta(minutes=1)
# Not in the manual's table (Teleport's name): a live connection was hung up, with the reason.
CLIENT_DISCONNECT = "client.disconnect"
# Not in the manual's table (Teleport's names): the subsystem a session channel asked for, each
# SFTP operation on a file (`teleport.srv.sftp`), and the bytes an SFTP session moved per file.
SUBSYSTEM = "subsystem"
SFTP = "sftp"
SFTP_SUMMARY = "sftp_summary"


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
        "time": now.strftime(TIME_FORMAT),
    }
    for name, value in fields.items():
        event[name.replace("addr_", "addr.")] = value
    return event


def from_host(report: Mapping[str, Any], server_id: str, clock: Clock) -> AuditEvent:
    """Return the event a host reported, with its id and server set and its time bounded.

    A host's certificate proves which host it is, not what it writes: left to the host, a node
    could file events under another server, far in the past or future, or over another event's
    id. Its own `time` is kept only within [now - HOST_TIME_MAX_AGE, now + HOST_TIME_MAX_SKEW],
    so that an event spooled during an outage keeps the time it happened; else it is now.
    """
    event_type = report.get("event")
    if not isinstance(event_type, str) or not event_type:
        raise BadParameter("event needs an 'event' type")
    if event_type in AUTH_SERVER_ONLY:
        raise AccessDenied(f"only the auth server records {event_type!r} events")
    return {**report, "uid": str(uuid.uuid4()), "time": _bounded_time(report.get("time"), clock),
            "server_id": server_id}


def _bounded_time(claimed: object, clock: Clock) -> str:
    """Return the host's time if it is well formed and plausible, else the auth server's now."""
    now = clock.now()
    if isinstance(claimed, str):
        try:
            when = datetime.strptime(claimed, TIME_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            when = None
        if when is not None and now - HOST_TIME_MAX_AGE <= when <= now + HOST_TIME_MAX_SKEW:
            return when.strftime(TIME_FORMAT)
    return now.strftime(TIME_FORMAT)


class MemoryEmitter:
    """Keep events in a list: for tests and for components with no durable sink yet."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def emit(self, event: Mapping[str, Any]) -> None:
        self.events.append(dict(event))

    def of_type(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.events if e["event"] == event_type]
