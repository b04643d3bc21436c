"""Poll the auth server's revocation list and roles, so a node or proxy refuses and hangs up on
users who were deleted or locked since they logged in (see `teleport.auth.access`), or whose
roles no longer let them in.

The last list is kept while the auth server is unreachable: a node keeps serving, and keeps
refusing the users it last knew to be revoked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from teleport.auth.access import Revocations, fetch_revocations, tls_cert_issued_at
from teleport.auth.client import AuthClient
from teleport.errors import TeleportError
from teleport.keys.ssh import SSHCertInfo
from teleport.keys.tls import identity_from_cert
from teleport.sshutils.listener import SSHListener
from teleport.types.roles import Role
from teleport.utils.clock import Clock

log = logging.getLogger("teleport.revocations")
#: How often the list is fetched: the longest a deleted or locked user keeps a live session.
REFRESH_INTERVAL = 3.0
# A server dying mid-answer shows up as a payload or JSON error, not only as one of ours.
_FAILED = (TeleportError, aiohttp.ClientError, ValueError)


class RevocationWatch:
    """The revocation list as last fetched, and the SSH listeners it is enforced on."""

    def __init__(self, client: AuthClient, clock: Clock, interval: float = REFRESH_INTERVAL) -> None:
        self.client = client
        self.clock = clock
        self.interval = interval
        self.current = Revocations()
        #: The cluster's roles by name as last fetched (None until the first answer): nodes
        #: judge every login with them, proxies filter node lists.
        self.roles: dict[str, Role] | None = None
        self.outage = False
        self._listeners: list[SSHListener[Any]] = []

    def refusal(self, cert: SSHCertInfo) -> str | None:
        """Return why a user certificate is refused now, or None (the check SSH listeners run)."""
        return self.current.ssh_refusal(cert, self.clock.now())

    def node_check(self, host_uuid: str) -> Callable[[SSHCertInfo], str | None]:
        """Return the check a node runs: the user's refusal, or a lock on the node itself (then
        it serves no one, and its live sessions end at the next refresh)."""

        def refusal(cert: SSHCertInfo) -> str | None:
            return self.refusal(cert) or self.current.node_refusal(host_uuid, self.clock.now())

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
        for listener in self._listeners:
            await listener.end_revoked()
        return True

    async def run(self) -> None:
        """Refresh now and then every interval, until cancelled; an unexpected error is logged."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("revocation list refresh failed")
            await asyncio.sleep(self.interval)
