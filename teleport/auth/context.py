"""What every part of the auth server is handed: storage, audit, time, settings, cluster name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teleport.backend.base import Backend
from teleport.config import StaticToken
from teleport.events import emitter as ev
from teleport.events.objectstore import ObjectStore
from teleport.events.sessions_store import MAX_RECORDING_BYTES
from teleport.utils.clock import Clock


@dataclass(frozen=True)
class AuthSettings:
    cluster_name: str | None = None
    second_factor: str = "otp"
    #: `authentication.type` (local, github, oidc) and `connector_name`: what `tsh login`
    #: and the web UI offer first.
    auth_type: str = "local"
    connector_name: str = ""
    ca_signature_algo: str | None = None
    static_tokens: tuple[StaticToken, ...] = ()
    #: `teleport.config.modes.SessionRecording`: announced in ping, nodes and proxies act on it.
    session_recording: str = "node"
    #: Where recordings are stored (`data_dir/log/sessions/default`); None: not stored here.
    recordings_dir: Path | None = None
    #: The object store all auth servers share (`audit_sessions_uri: s3://`, `gs://`): then
    #: recordings_dir only stages what this server received until the store has it.
    recordings_store: ObjectStore | None = None
    #: Largest recording a host may upload (both compressed parts); bigger ones get a 413.
    max_recording_bytes: int = MAX_RECORDING_BYTES
    #: Cut live sessions when the user's certificate expires (nodes and proxies enforce it).
    disconnect_expired_cert: bool = False
    #: Close sessions with no client input for this long; 0 never does.
    client_idle_seconds: float = 0.0
    #: WebAuthn (`teleport.config.secondfactor`): the RP ID ("" = not usable), the exact
    #: origins (the u2f facets; empty = https origins on the RP ID's host or under it), and
    #: whether a resident key alone logs in.
    webauthn_rp_id: str = ""
    webauthn_origins: tuple[str, ...] = ()
    passwordless: bool = False
    #: `teleport start --insecure`: a trusted root's web proxy certificate is not checked
    #: (a root serving a self-signed one); anyone on the way could then pose as the root.
    insecure: bool = False


@dataclass
class AuthContext:
    """The shared parts; `cluster_name` is set once the stored name is loaded (`AuthServer.init`)."""

    backend: Backend
    emitter: ev.Emitter
    clock: Clock
    settings: AuthSettings
    cluster_name: str = ""

    async def audit(self, event_type: str, user: str, **fields: Any) -> None:
        """Record an event under the name of who did it (an admin, a user, a host)."""
        await self.emitter.emit(ev.make_event(event_type, self.clock, user=user, **fields))


def redact(token: str) -> str:
    """Keep only a token's head for logs: enough to tell tokens apart, useless to an attacker."""
    return token[:4] + "****" if len(token) > 8 else "****"


def unique(items: list[str]) -> list[str]:
    """Drop empty and repeated items, keeping the first of each in order."""
    return list(dict.fromkeys(i for i in items if i))
