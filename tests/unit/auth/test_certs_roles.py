"""What a user's certificates carry follows their roles as stored now (no network)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from teleport.auth.server import AuthServer
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys.identity import NO_LOGIN
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.types.roles import Role


async def _role(auth: AuthServer, name: str, spec: dict[str, Any]) -> None:
    await auth.resources.save_role(Role.model_validate(
        {"kind": "role", "version": "v5", "metadata": {"name": name}, "spec": spec}),
        actor="admin", overwrite=True)


async def _certs(auth: AuthServer, roles: list[str], ttl: timedelta | None = None,
                 logins: tuple[str, ...] = ("joe", "root")) -> sshkeys.SSHCertInfo:
    user = await auth.accounts.upsert_user(User(metadata=Metadata(name="joe"), spec=UserSpec(
        roles=roles, traits={"logins": list(logins)})))
    certs = await auth.certs.issue_user_certs(
        user, sshkeys.public_key_of(sshkeys.generate_private_key()),
        tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()), ttl)
    return sshkeys.parse_cert(certs.ssh_cert)


async def test_principals_are_the_roles_logins_with_denied_ones_removed(auth: AuthServer) -> None:
    await _role(auth, "dev", {"allow": {"logins": ["ubuntu", "{{internal.logins}}"],
                                        "node_labels": {"env": "staging"}}})
    await _role(auth, "no-root", {"deny": {"logins": ["root"]}})
    assert (await _certs(auth, ["dev"])).principals == ("ubuntu", "joe", "root")
    assert (await _certs(auth, ["dev", "no-root"])).principals == ("ubuntu", "joe")


async def test_a_user_without_logins_gets_a_principal_no_system_has(auth: AuthServer) -> None:
    # An empty principal list would let OpenSSH's sshd accept the certificate for any account.
    principals = (await _certs(auth, ["auditor"])).principals
    assert len(principals) == 1 and principals[0].startswith(f"{NO_LOGIN}-")
    assert (await _certs(auth, ["auditor"])).principals != principals  # never one to guess


async def test_max_session_ttl_caps_the_asked_ttl(auth: AuthServer) -> None:
    await _role(auth, "short", {"options": {"max_session_ttl": "1h"},
                                "allow": {"logins": ["{{internal.logins}}"],
                                          "node_labels": {"*": "*"}}})
    now = auth.clock.now()
    assert (await _certs(auth, ["short"], timedelta(hours=12))).valid_before - now == \
        timedelta(hours=1)
    assert (await _certs(auth, ["access"], timedelta(hours=12))).valid_before - now == \
        timedelta(hours=12)
    # The strictest role wins whatever else the user holds.
    assert (await _certs(auth, ["access", "short"], None)).valid_before - now == timedelta(hours=1)


async def test_forwarding_extensions_follow_the_role_options(auth: AuthServer) -> None:
    granted = (await _certs(auth, ["access"])).extensions
    assert "permit-port-forwarding" in granted and "permit-agent-forwarding" in granted
    await _role(auth, "plain", {"allow": {"logins": ["{{internal.logins}}"],
                                          "node_labels": {"*": "*"}}})
    bare = (await _certs(auth, ["plain"])).extensions
    assert "permit-port-forwarding" not in bare and "permit-agent-forwarding" not in bare
    assert "permit-pty" in bare
    await _role(auth, "no-forwarding", {"options": {"port_forwarding": False}})
    vetoed = (await _certs(auth, ["access", "no-forwarding"])).extensions
    assert "permit-port-forwarding" not in vetoed and "permit-agent-forwarding" in vetoed
