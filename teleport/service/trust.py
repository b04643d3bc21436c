"""Keep the CA public keys that nodes and proxies trust fresh, fetched from the auth API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from teleport.auth.client import AuthClient
from teleport.auth.identity_file import IdentityFile
from teleport.errors import TeleportError

log = logging.getLogger("teleport.trust")
REFRESH_INTERVAL = 30.0


class TrustedCAs:
    """The latest user/host SSH CA keys and TLS CA certs; starts from the identity file."""

    def __init__(self, client: AuthClient, identity: IdentityFile) -> None:
        self.client = client
        self._user = list(identity.user_ca_keys)
        self._host = list(identity.host_ca_keys)
        self._tls = [c.encode() for c in identity.tls_ca_certs]
        self._wake = asyncio.Event()
        self._tls_changed: list[Callable[[], None]] = []

    def user_keys(self) -> list[str]:
        return self._user

    def host_keys(self) -> list[str]:
        return self._host

    def tls_certs(self) -> list[bytes]:
        return self._tls

    def on_tls_change(self, call: Callable[[], None]) -> None:
        """Call call() after a refresh that changed the TLS CA certificates (a CA rotation's
        init and standby), e.g. to check new client certificates against them."""
        self._tls_changed.append(call)

    async def refresh(self) -> None:
        self._user = (await self.client.get_ca("user")).trusted_ssh_public_keys()
        self._host = (await self.client.get_ca("host")).trusted_ssh_public_keys()
        tls = [c.encode() for c in (await self.client.get_ca("tls")).trusted_tls_certs()]
        changed, self._tls = tls != self._tls, tls
        if changed:
            for call in self._tls_changed:
                call()

    def refresh_soon(self) -> None:
        """Refresh now rather than at the next interval: the CAs just changed (the proxy's
        watch-fed cache says so), and a rotated key must be trusted within a second."""
        self._wake.set()

    async def run(self) -> None:
        """Refresh forever; a failed refresh keeps the last known keys."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), REFRESH_INTERVAL)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.refresh()
            except TeleportError as err:
                log.warning("cannot refresh certificate authorities: %s", err)
