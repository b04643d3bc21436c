"""Poll the auth server's revocation list and roles, so a node or proxy refuses and hangs up on
users who were deleted or locked since they logged in (see `teleport.auth.access`), or whose
roles no longer let them in. A watch stream (`GET /v1/watch`) makes the refresh follow a change
of a lock, role or user within a second; the poll stays as the backstop when the stream is down.

The last list is kept while the auth server is unreachable: a node keeps serving, and keeps
refusing the users it last knew to be revoked. It is also kept on disk (`state`, 0600), so a
node restarted while the auth server is down judges logins with the roles and locks it last
knew instead of refusing everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from teleport.auth.access import (
    Revocations,
    fetch_revocations,
    ssh_cert_issued_at,
    tls_cert_issued_at,
)
from teleport.auth.client import AuthClient
from teleport.errors import AccessDenied, TeleportError
from teleport.keys.ssh import SSHCertInfo
from teleport.keys.tls import identity_from_cert
from teleport.sshutils.listener import SSHListener
from teleport.types.roles import Role
from teleport.utils.clock import Clock
from teleport.utils.fs import ensure_private_dir, write_secret

log = logging.getLogger("teleport.revocations")
#: How often the list is fetched: the longest a deleted or locked user keeps a live session
#: while the watch stream is down.
REFRESH_INTERVAL = 3.0
#: What the watch stream follows: whatever the revocation list and the role cache are built from.
WATCH_KINDS = ("lock", "role", "user", "cert_authority")
#: The kinds whose changes the revocation list and the roles depend on.
REVOCATION_KINDS = frozenset({"lock", "role", "user"})
#: A burst of changes (`tctl create -f` of many roles) costs one refresh per this many seconds.
COALESCE = 0.2
#: Reconnecting a broken watch waits this long at first, doubling up to WATCH_RETRY_MAX.
WATCH_RETRY_MIN = 0.5
WATCH_RETRY_MAX = 10.0
# A server dying mid-answer shows up as a payload or JSON error, not only as one of ours.
_FAILED = (TeleportError, OSError, ValueError)


class KeptAccess(BaseModel):
    """What a node keeps on disk of the last answer: the revocation list and the roles."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    revocations: Revocations = Field(default_factory=Revocations)
    roles: list[Role] = Field(default_factory=list)


class RevocationWatch:
    """The revocation list as last fetched, and the SSH listeners it is enforced on."""

    def __init__(self, client: AuthClient, clock: Clock, interval: float = REFRESH_INTERVAL,
                 state: Path | None = None) -> None:
        self.client = client
        self.clock = clock
        self.interval = interval
        self.current = Revocations()
        #: The cluster's roles by name as last fetched (None until the first answer): nodes
        #: judge every login with them, proxies filter node lists.
        self.roles: dict[str, Role] | None = None
        self.outage = False
        self._listeners: list[SSHListener[Any]] = []
        #: Called on a CA change (and when the stream opens): a node's trusted CAs follow it.
        self._on_ca_change: list[Callable[[], None]] = []
        # The poll and the watch both refresh; one at a time, so an older answer never lands last.
        self._refreshing = asyncio.Lock()
        #: Where the last answer is kept across restarts (None: memory only), and what was
        #: written there last.
        self.state = state
        self._kept = b""
        if state is not None:
            self._load(state)

    def _load(self, path: Path) -> None:
        """Start from the answer kept on disk, if there is a readable one."""
        try:
            kept = KeptAccess.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            log.warning("ignoring the kept revocation list and roles in %s: %s", path,
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
            return
        self.current, self.roles = kept.revocations, {r.metadata.name: r for r in kept.roles}

    def _keep(self) -> None:
        """Write the last answer for the next start (0600 in a 0700 folder, replaced whole)."""
        if self.state is None or self.roles is None:
            return
        data = KeptAccess(revocations=self.current, roles=list(self.roles.values())
                          ).model_dump_json().encode()
        if data == self._kept:  # most refreshes change nothing: no write, no fsync
            return
        try:
            ensure_private_dir(self.state.parent)
            write_secret(self.state, data)
        except OSError as err:
            log.warning("cannot keep the revocation list in %s: %s", self.state,
                        err.strerror or err)
            return
        self._kept = data

    def refusal(self, cert: SSHCertInfo) -> str | None:
        """Return why a user certificate is refused now, or None (the check SSH listeners run)."""
        return self.current.ssh_refusal(cert, self.clock.now())

    def node_check(self, host_uuid: str,
                   roles_of: Callable[[SSHCertInfo], Sequence[str]] | None = None
                   ) -> Callable[[SSHCertInfo], str | None]:
        """Return the check a node runs: the user's refusal, or a lock on the node itself (then
        it serves no one, and its live sessions end at the next refresh).

        roles_of: the roles of ours a certificate stands for (a trusted root's user: after
        the role map), so a lock on one of them holds as on the certificate's own."""

        def refusal(cert: SSHCertInfo) -> str | None:
            now = self.clock.now()
            roles = list(cert.roles)
            if roles_of is not None:
                with contextlib.suppress(AccessDenied):  # the role check says why itself
                    roles += [r for r in roles_of(cert) if r not in roles]
            return (self.current.refusal(cert.key_id, ssh_cert_issued_at(cert), now, roles)
                    or self.current.node_refusal(host_uuid, now))

        return refusal

    def tls_refusal(self, user: str, der: bytes) -> str | None:
        """Return why a user's X.509 certificate (DER) is refused now, or None (the web API's check)."""
        roles = identity_from_cert(der).roles  # a role lock refuses the roles it carries
        return self.current.refusal(user, tls_cert_issued_at(der), self.clock.now(), roles)

    def enforce_on(self, listener: SSHListener[Any]) -> None:
        """Hang up the listener's connections of revoked users after every refresh."""
        self._listeners.append(listener)

    async def refresh(self) -> bool:
        """Fetch the list and end revoked users' connections; on failure keep the last list."""
        async with self._refreshing:
            return await self._refresh()

    async def _refresh(self) -> bool:
        try:
            current = await fetch_revocations(self.client)
            roles = {role.metadata.name: role for role in await self.client.list_roles()}
        except _FAILED as err:
            if not self.outage:
                log.warning("cannot refresh the revocation list, keeping the last copy: %s", err)
            self.outage = True
            return False
        if self.outage:
            log.info("revocation list refreshed, the auth server is back")
        self.current, self.roles, self.outage = current, roles, False
        self._keep()
        # Together: a proxy waits a moment before it hangs up, so the node can say why first.
        await asyncio.gather(*(listener.end_revoked() for listener in self._listeners))
        return True

    async def run(self) -> None:
        """Refresh now and then every interval, until cancelled; an unexpected error is logged."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("revocation list refresh failed")
            await asyncio.sleep(self.interval)

    def on_ca_change(self, call: Callable[[], None]) -> None:
        """Call call() when the stream announces a CA change, e.g. to re-read the CA keys now."""
        self._on_ca_change.append(call)

    async def watch(self) -> None:
        """Refresh on every change the auth server streams, until cancelled: the list follows a
        lock within a second, not at the next poll. A broken stream is opened again after a
        backoff; the poll in `run` covers the gap."""
        changed = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._refresh_on(changed))
            await self._follow(changed)

    async def _follow(self, changed: asyncio.Event) -> None:
        delay, down, cursor = WATCH_RETRY_MIN, False, ""
        while True:
            try:
                async for event in self.client.watch(WATCH_KINDS, since=cursor):
                    if event.type == "init":
                        if down:
                            log.info("watching the auth server for changes again")
                        delay, down = WATCH_RETRY_MIN, False
                    # A fresh init: whatever changed while the stream was down is read now; a
                    # resumed one is followed by those changes themselves.
                    fresh = event.type == "init" and not event.resumed
                    if fresh or event.kind == "cert_authority":
                        for call in self._on_ca_change:
                            call()
                    if fresh or event.kind in REVOCATION_KINDS:
                        changed.set()
                    cursor = event.revision or cursor
            except _FAILED as err:
                if not down:
                    log.warning("cannot watch the auth server for changes, polling every %g s "
                                "meanwhile: %s", self.interval, err)
                down = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_RETRY_MAX)

    async def _refresh_on(self, changed: asyncio.Event) -> None:
        """Refresh once per signal, at most once per COALESCE seconds, and always after the
        last change (a change during a refresh sets the signal for the next one)."""
        while True:
            await changed.wait()
            changed.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("revocation list refresh failed")
            await asyncio.sleep(COALESCE)
