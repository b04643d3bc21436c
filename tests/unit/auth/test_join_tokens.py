"""Join tokens over the memory backend with a fake clock: a token admits hosts until its TTL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from teleport.auth.server import AuthServer
from teleport.errors import AccessDenied
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys


async def _join(auth: AuthServer, token: str, name: str) -> None:
    await auth.hosts.register_host(
        token=token, host_uuid=f"uuid-{name}", nodename=name, role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), addresses=[],
        remote_addr="127.0.0.1:1")


async def test_a_token_admits_hosts_until_its_ttl_and_not_after(auth: AuthServer) -> None:
    token = await auth.hosts.create_provision_token(["node"], timedelta(minutes=5))
    await _join(auth, token.metadata.name, "early")
    auth.clock.advance(timedelta(minutes=5, seconds=1))  # type: ignore[attr-defined]
    with pytest.raises(AccessDenied, match="invalid, expired or revoked"):
        await _join(auth, token.metadata.name, "late")
    provision, _ = await auth.hosts.list_tokens()
    assert token.metadata.name not in [t.metadata.name for t in provision]
