"""`POST /v1/hosts/certs`: a node or proxy re-issues its own certificates (it follows a CA
rotation). Who it is comes from the certificate it calls with, never from the body; the name and
addresses it asks for are checked as joining checks them; users and tctl get nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from teleport.api.auth_models import IssuedCerts
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.errors import AccessDenied, AlreadyExists
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec, User, UserSpec
from teleport.types.rotation import Mode, Phase
from teleport.utils.addr import HostPort
from teleport.utils.clock import RealClock
from tests.integration.auth_api import serve_auth_api


@dataclass
class Cluster:
    auth: AuthServer
    addr: HostPort

    async def client(self, role: str, host_uuid: str = "node-1") -> AuthClient:
        key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid=host_uuid, nodename=host_uuid, system_role=role,
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(key), addresses=[])
        return AuthClient.from_tls(certs.tls_cert.encode(), key,
                                   [c.encode() for c in certs.tls_ca_certs], [self.addr])

    async def user_client(self) -> AuthClient:
        user = User(metadata=Metadata(name="alice"), spec=UserSpec(roles=["editor"]))
        await self.auth.accounts.upsert_user(user, actor="test")
        key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_user_certs(
            user, sshkeys.public_key_of(sshkeys.generate_private_key()),
            tlskeys.tls_public_key_pem(key), timedelta(hours=1))
        return AuthClient.from_tls(certs.tls_cert.encode(), key,
                                   [c.encode() for c in certs.tls_ca_certs], [self.addr])


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = RealClock()
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="renew.test"))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Cluster(auth, addr)
    finally:
        await runner.cleanup()


async def _renew(client: AuthClient, nodename: str = "node-1",
                 addresses: list[str] | None = None) -> tuple[IssuedCerts, bytes, bytes]:
    ssh_key = sshkeys.generate_private_key()
    tls_key = tlskeys.generate_tls_key()
    certs = await client.reissue_host_certs(
        nodename=nodename, ssh_public_key=sshkeys.public_key_of(ssh_key),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=addresses or [])
    return certs, ssh_key, tls_key


async def test_a_node_gets_new_certificates_for_its_new_keys_from_the_active_keys(
        cluster: Cluster) -> None:
    # A certificate of the old CA (the API here serves the CAs of its start, the old one).
    async with await cluster.client("Node") as node:
        await cluster.auth.rotations.rotate("admin", ["host", "tls"], Mode.MANUAL, Phase.INIT,
                                            None)
        await cluster.auth.rotations.rotate("admin", ["host", "tls"], Mode.MANUAL,
                                            Phase.UPDATE_CLIENTS, None)
        certs, ssh_key, tls_key = await _renew(node, addresses=["10.0.0.7"])
    host = await cluster.auth.certs.get_ca("host")
    tls = await cluster.auth.certs.get_ca("tls")
    info = sshkeys.verify_cert(certs.ssh_cert, [host.spec.active_keys.ssh[0].public_key],
                               now=cluster.auth.clock.now(), cert_type="host")
    assert info.key_id == "node-1" and "10.0.0.7" in info.principals
    assert info.public_key.split()[:2] == sshkeys.public_key_of(ssh_key).split()[:2]
    assert tlskeys.issued_by(certs.tls_cert.encode(), [tls.spec.active_keys.tls[0].cert.encode()])
    assert tlskeys.key_matches_cert(tls_key, certs.tls_cert.encode())
    identity = tlskeys.identity_from_cert(certs.tls_cert.encode())
    assert (identity.host_uuid, identity.system_role) == ("node-1", "Node")
    assert sorted(certs.tls_ca_certs) == sorted(tls.trusted_tls_certs())


async def test_the_body_cannot_name_another_host_or_role(cluster: Cluster) -> None:
    async with await cluster.client("Proxy", "proxy-1") as proxy:
        answer = await proxy.call("POST", "/v1/hosts/certs", {
            "nodename": "proxy-1", "host_uuid": "node-2", "role": "Admin",
            "ssh_public_key": sshkeys.public_key_of(sshkeys.generate_private_key()),
            "tls_public_key": tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()).decode()})
    identity = tlskeys.identity_from_cert(answer["tls_cert"].encode())
    assert (identity.host_uuid, identity.system_role) == ("proxy-1", "Proxy")
    assert sshkeys.parse_cert(answer["ssh_cert"]).key_id == "proxy-1"


async def test_reserved_names_and_names_of_live_hosts_are_refused(cluster: Cluster) -> None:
    other = Server(kind="node", metadata=Metadata(
        name="node-2", expires=cluster.auth.clock.now() + timedelta(minutes=5)),
        spec=ServerSpec(addr="127.0.0.1:3022", hostname="db"))
    await cluster.auth.hosts.upsert_server(other)
    async with await cluster.client("Node") as node:
        with pytest.raises(AccessDenied, match="reserved"):
            await _renew(node, addresses=["auth.renew.test.teleport.cluster.local"])
        with pytest.raises(AccessDenied, match="reserved"):
            await _renew(node, nodename="teleport.cluster.local")
        with pytest.raises(AlreadyExists, match="in use by host node-2"):
            await _renew(node, nodename="db")


async def test_users_and_admins_may_not_call_it(cluster: Cluster) -> None:
    async with await cluster.user_client() as user, await cluster.client("Admin", "admin") as admin:
        for client in (user, admin):
            with pytest.raises(AccessDenied, match="may not POST /v1/hosts/certs"):
                await _renew(client)
