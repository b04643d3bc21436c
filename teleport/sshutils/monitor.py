"""Hang up SSH connections whose certificate expired or whose client went idle, as Teleport does.

`auth_service.disconnect_expired_cert` and `auth_service.client_idle_timeout` are cluster
settings: the auth server announces them in its ping answer, nodes and proxies read them with
`SessionPolicy.from_ping` and run `watch` on every authenticated connection. A user's roles may
tighten both (`SessionPolicy.with_role_options`; the node applies them). A connection is
checked every `CHECK_SECONDS`, so a cut happens at most that late; it is audited as
`client.disconnect` with the reason, and the client is told the same reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from teleport.config.modes import Recorder, SessionRecording, records_at
from teleport.utils.clock import Clock
from teleport.utils.duration import format_duration
from teleport.utils.waits import wait_event

if TYPE_CHECKING:
    from teleport.sshutils.auth import CertAuthServer

#: How often a connection is checked: the most a session outlives its certificate or idle limit.
CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class SessionPolicy:
    """When a live connection must end although its user still has access."""

    disconnect_expired_cert: bool = False
    #: Close connections with no input from the client for this long; None never does.
    client_idle_timeout: timedelta | None = None

    @classmethod
    def from_ping(cls, answer: Any) -> SessionPolicy:
        """Read the policy from the auth server's ping answer (a model or its JSON)."""
        def field(name: str) -> Any:
            return answer.get(name) if isinstance(answer, dict) else getattr(answer, name, None)

        idle = field("client_idle_timeout_seconds")
        return cls(disconnect_expired_cert=bool(field("disconnect_expired_cert")),
                   client_idle_timeout=timedelta(seconds=float(idle)) if idle else None)

    def with_role_options(self, client_idle_timeout: timedelta | None,
                          disconnect_expired_cert: bool | None) -> SessionPolicy:
        """Return the policy for a user whose roles set these options, as Teleport combines
        them: the shorter idle timeout wins, and a role can ask for the expiry cut, not waive it.
        """
        idle = self.client_idle_timeout
        if client_idle_timeout is not None:
            idle = client_idle_timeout if idle is None else min(idle, client_idle_timeout)
        return replace(self, client_idle_timeout=idle,
                       disconnect_expired_cert=self.disconnect_expired_cert
                       or bool(disconnect_expired_cert))

    def reason(self, cert_expires: datetime, last_input: datetime, now: datetime) -> str | None:
        """Return why a connection must end now, or None."""
        if self.disconnect_expired_cert and now >= cert_expires:
            return f"client certificate expired at {cert_expires.isoformat(timespec='seconds')}"
        if self.client_idle_timeout is not None and now - last_input >= self.client_idle_timeout:
            return (f"client is idle for {format_duration(now - last_input)}, exceeded idle "
                    f"timeout of {format_duration(self.client_idle_timeout)}")
        return None


def for_host(policy: SessionPolicy, mode: SessionRecording, host: Recorder) -> SessionPolicy:
    """Return the part of the policy a node or a proxy enforces in a recording mode.

    Where the proxy records, it terminates the user's SSH and logs in to the node with a
    short-lived copy of the certificate: the proxy checks the user's own certificate's expiry,
    and the node, which sees every keystroke relayed, checks idleness. Otherwise the proxy only
    forwards bytes and the node checks both.
    """
    if records_at(mode) == "proxy":
        if host == "node":
            return replace(policy, disconnect_expired_cert=False)
        return replace(policy, client_idle_timeout=None)
    return policy if host == "node" else SessionPolicy()


#: What a server knows of the policy now (it may change while connections are open).
PolicySource = Callable[[], SessionPolicy]


def no_policy() -> SessionPolicy:
    """Never hang up: for servers without cluster settings (tests, tools)."""
    return SessionPolicy()


async def watch(conn: CertAuthServer, policy: PolicySource, clock: Clock,
                interval: float = CHECK_SECONDS) -> None:
    """Check one authenticated connection until it closes or must end; then audit and hang up."""
    while conn.identity is not None and not conn.gone.is_set():
        reason = policy().reason(conn.identity.cert.valid_before, conn.last_input, clock.now())
        if reason is not None:
            await conn.hang_up(reason)
            return
        await wait_event(conn.gone, interval)
