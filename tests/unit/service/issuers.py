"""The in-process host certificate issuer the follower tests hand an IdentityFollower."""

from __future__ import annotations

from teleport.api.auth_models import IssuedCerts
from teleport.auth.server import AuthServer
from teleport.errors import AccessDenied
from teleport.service.rotation import local_issuer


class Counted:
    """What `POST /v1/hosts/certs` runs, for node-1, counting its calls (or refusing them)."""

    def __init__(self, auth: AuthServer, refuse: bool = False) -> None:
        self.calls = 0
        self.refuse = refuse
        self._issue = local_issuer(auth, "Node", "node-1", "node1", [])

    async def __call__(self, ssh_public_key: str, tls_public_key: bytes) -> IssuedCerts:
        self.calls += 1
        if self.refuse:
            raise AccessDenied("the auth server refuses this certificate")
        return await self._issue(ssh_public_key, tls_public_key)
