"""Trust between two auth servers: the root validating a leaf's token through its auth API (as its
proxy relays it), the CAs each side keeps, enabling, disabling and removing, the leaf's status,
and every refusal audited on the side that refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from teleport.api.auth_models import TrustedClusterValidation, TrustedClusterValidationAnswer
from teleport.auth import api as auth_api
from teleport.auth import authority
from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.auth.trustedclusters import OFFLINE_AFTER, ROOTS_REUSE, ask_root, root_cas
from teleport.backend.memory import MemoryBackend
from teleport.errors import (
    AccessDenied,
    AlreadyExists,
    BadParameter,
    ConnectionProblem,
    NotFound,
)
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.identity import Identity
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.types.trusted import RoleMapping, TrustedCluster, TrustedClusterSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

ROOT, LEAF = "root.test", "leaf.test"


@dataclass
class Side:
    auth: AuthServer
    emitter: MemoryEmitter


@dataclass
class Pair:
    root: Side
    leaf: Side
    clock: FakeClock
    token: str
    proxy: AuthClient  # the root's proxy, relaying validations to its auth API

    def trusted(self, *, token: str | None = None, enabled: bool = True,
                local: str = "access", name: str = ROOT) -> TrustedCluster:
        return TrustedCluster(metadata=Metadata(name=name), spec=TrustedClusterSpec(
            enabled=enabled, token=self.token if token is None else token,
            web_proxy_addr="root.example.com:3080",
            role_map=[RoleMapping(remote="admin", local=[local])]))


async def _side(name: str, clock: FakeClock) -> Side:
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(clock), emitter, clock, AuthSettings(cluster_name=name))
    await auth.init()
    return Side(auth, emitter)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    clock = FakeClock(datetime.now(timezone.utc))
    root, leaf = await _side(ROOT, clock), await _side(LEAF, clock)
    runner, addr = await serve_auth_api(root.auth)
    tls_key = tlskeys.generate_tls_key()
    certs = await root.auth.certs.issue_host_certs(
        host_uuid="proxy-1", nodename="proxy", system_role="Proxy",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    proxy = AuthClient([addr], tlsconfig.ssl_client_context(
        certs.tls_cert.encode(), tls_key, [c.encode() for c in certs.tls_ca_certs]),
        timeout=10, cluster=ROOT)

    async def ask(web_proxy_addr: str,
                  request: TrustedClusterValidation) -> TrustedClusterValidationAnswer:
        assert web_proxy_addr == "root.example.com:3080"
        return await proxy.validate_trusted_cluster(
            request.model_copy(update={"remote_addr": "198.51.100.7:40000"}))

    leaf.auth.trusted_clusters.ask = ask
    token = await root.auth.hosts.create_provision_token(["trusted_cluster"], timedelta(hours=1))
    try:
        yield Pair(root, leaf, clock, token.metadata.name, proxy)
    finally:
        await proxy.close()
        await runner.cleanup()


async def test_a_wrong_token_is_refused_and_audited_by_the_root(pair: Pair) -> None:
    with pytest.raises(AccessDenied, match="join token is invalid"):
        await pair.leaf.auth.trusted_clusters.save(pair.trusted(token="nope-nope-nope"), "admin",
                                                   overwrite=False)
    refused = pair.root.emitter.of_type("trusted_cluster_token.validate")
    assert refused[-1]["success"] is False and refused[-1]["user"] == LEAF
    assert refused[-1]["addr.remote"] == "198.51.100.7:40000"
    with pytest.raises(NotFound):
        await pair.root.auth.certs.cas.get("host", LEAF)
    with pytest.raises(NotFound):
        await pair.leaf.auth.certs.cas.get("user", ROOT)
    assert pair.leaf.emitter.of_type("trusted_cluster.create")[-1]["success"] is False


async def test_each_side_keeps_the_others_cas_and_the_leaf_keeps_the_role_map(pair: Pair) -> None:
    await pair.leaf.auth.trusted_clusters.save(pair.trusted(), "admin", overwrite=False)
    for ca_type in ("host", "user", "tls"):
        theirs = await pair.root.auth.certs.cas.get(ca_type, LEAF)
        ours = await pair.leaf.auth.certs.get_ca(ca_type)
        assert theirs.trusted_ssh_public_keys() == ours.trusted_ssh_public_keys()
        assert not any(k.private_key for k in theirs.spec.active_keys.ssh)
        kept = await pair.leaf.auth.certs.cas.get(ca_type, ROOT)
        assert kept.spec.role_map == [RoleMapping(remote="admin", local=["access"])]
        assert not any(k.private_key for k in kept.spec.active_keys.ssh)
    assert [rc.metadata.name for rc in await pair.proxy.list_remote_clusters()] == [LEAF]
    users = {ca.spec.cluster_name for ca in await pair.proxy.list_cas("user")}
    assert users == {ROOT, LEAF}
    assert pair.root.emitter.of_type("trusted_cluster_token.validate")[-1]["success"] is True
    # A host cannot join with a trusted_cluster token.
    with pytest.raises(AccessDenied, match="does not allow the node role"):
        await pair.root.auth.hosts.register_host(
            token=pair.token, host_uuid="n-1", nodename="n", role="Node",
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
            addresses=[], remote_addr="")


async def test_a_role_map_to_a_role_the_leaf_lacks_is_refused_before_asking(pair: Pair) -> None:
    with pytest.raises(BadParameter, match='role_map: role "ghost" does not exist'):
        await pair.leaf.auth.trusted_clusters.save(pair.trusted(local="ghost"), "admin",
                                                   overwrite=False)
    assert not pair.root.emitter.of_type("trusted_cluster_token.validate")


async def test_the_resource_must_bear_the_roots_name(pair: Pair) -> None:
    with pytest.raises(BadParameter, match=f"is named '{ROOT}'"):
        await pair.leaf.auth.trusted_clusters.save(pair.trusted(name="other"), "admin",
                                                   overwrite=False)
    with pytest.raises(NotFound):
        await pair.leaf.auth.trusted_clusters.trusted.get("other")


async def test_another_cluster_cannot_take_a_leafs_name(pair: Pair) -> None:
    await pair.leaf.auth.trusted_clusters.save(pair.trusted(), "admin", overwrite=False)
    impostor = await _side(LEAF, pair.clock)
    impostor.auth.trusted_clusters.ask = pair.leaf.auth.trusted_clusters.ask
    with pytest.raises(AlreadyExists, match="remove it first with `tctl rm rc/leaf.test`"):
        await impostor.auth.trusted_clusters.save(pair.trusted(), "admin", overwrite=False)
    host = await pair.root.auth.certs.cas.get("host", LEAF)
    assert host.trusted_ssh_public_keys() == \
        (await pair.leaf.auth.certs.get_ca("host")).trusted_ssh_public_keys()


async def test_disabling_sets_the_roots_cas_aside_and_removing_forgets_them(pair: Pair) -> None:
    trust = pair.leaf.auth.trusted_clusters
    await trust.save(pair.trusted(), "admin", overwrite=False)
    validations = len(pair.root.emitter.of_type("trusted_cluster_token.validate"))
    await trust.save(pair.trusted(enabled=False), "admin", overwrite=True)
    assert {ca.spec.cluster_name for ca in await pair.leaf.auth.certs.cas.store("user").list()} \
        == {LEAF}
    assert await trust.tunnels() == []
    # As `tctl get tc` prints it (no token), enabled again: the stored token stays.
    await trust.save(pair.trusted(enabled=True).without_secrets(), "admin", overwrite=True)
    assert (await trust.trusted.get(ROOT)).spec.token == pair.token
    assert (await pair.leaf.auth.certs.cas.get("user", ROOT)).spec.role_map
    # Enabling and disabling did not ask the root again.
    assert len(pair.root.emitter.of_type("trusted_cluster_token.validate")) == validations
    await trust.remove(ROOT, "admin")
    for ca_type in ("host", "user", "tls"):
        with pytest.raises(NotFound):
            await pair.leaf.auth.certs.cas.get(ca_type, ROOT)
    assert pair.leaf.emitter.of_type("trusted_cluster.delete")[-1]["name"] == ROOT


async def test_a_leaf_is_online_while_a_proxy_reports_its_tunnel(pair: Pair) -> None:
    await pair.leaf.auth.trusted_clusters.save(pair.trusted(), "admin", overwrite=False)
    [leaf] = await pair.proxy.list_remote_clusters()
    assert leaf.status.connection == "offline"
    await pair.proxy.remote_cluster_heartbeat(LEAF)
    [leaf] = await pair.proxy.list_remote_clusters()
    assert leaf.status.connection == "online"
    pair.clock.advance(OFFLINE_AFTER + timedelta(seconds=1))
    [leaf] = await pair.proxy.list_remote_clusters()
    assert leaf.status.connection == "offline"
    await pair.root.auth.trusted_clusters.remove_remote(LEAF, "admin")
    with pytest.raises(NotFound):
        await pair.proxy.remote_cluster_heartbeat(LEAF)
    with pytest.raises(NotFound):
        await pair.root.auth.certs.cas.get("user", LEAF)


# --- the leaf's auth API and the root's certificates ------------------------------------------

async def _leaf_api(pair: Pair) -> tuple[web.AppRunner, HostPort]:
    """Serve the leaf's API trusting its own TLS CA and the root's, as the leaf's auth service
    does once it trusts the root (`service.leafclusters.AuthClientCAs`)."""
    tls_key = tlskeys.generate_tls_key()
    certs = await pair.leaf.auth.certs.issue_host_certs(
        host_uuid="auth-1", nodename="auth", system_role="Auth",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    roots = [c.encode() for ca in await pair.leaf.auth.trusted_clusters.root_tls_cas()
             for c in ca.trusted_tls_certs()]
    assert roots, "the leaf trusts no root yet"
    ctx = tlsconfig.ssl_server_context(certs.tls_cert.encode(), tls_key,
                                       [*(c.encode() for c in certs.tls_ca_certs), *roots],
                                       require_client_cert=False)
    runner = await auth_api.serve(pair.leaf.auth, ctx, "127.0.0.1", 0)
    return runner, HostPort("127.0.0.1", runner.addresses[0][1])


async def _as_root(pair: Pair, addr: HostPort, cert: str, key: bytes) -> AuthClient:
    """A client presenting a root-issued certificate to the leaf's auth server."""
    leaf_tls = await pair.leaf.auth.certs.get_ca("tls")
    return AuthClient([addr], tlsconfig.ssl_client_context(
        cert.encode(), key, [c.encode() for c in leaf_tls.trusted_tls_certs()]),
        timeout=10, cluster=LEAF)


async def _root_user(pair: Pair, roles: list[str]) -> tuple[str, bytes]:
    key = tlskeys.generate_tls_key()
    user = User(metadata=Metadata(name="alice"),
                spec=UserSpec(roles=roles, traits={"logins": ["root"]}))
    await pair.root.auth.accounts.users.users.put(user)
    issued = await pair.root.auth.certs.issue_user_certs(
        user, sshkeys.public_key_of(sshkeys.generate_private_key()),
        tlskeys.tls_public_key_pem(key), timedelta(hours=1))
    return issued.tls_cert, key


async def test_a_root_user_calls_the_leafs_api_with_the_mapped_roles_only(pair: Pair) -> None:
    await pair.leaf.auth.trusted_clusters.save(pair.trusted(), "admin", overwrite=False)
    runner, addr = await _leaf_api(pair)
    try:
        cert, key = await _root_user(pair, ["admin"])
        async with await _as_root(pair, addr, cert, key) as alice:
            await alice.list_servers("node")  # `access` sees nodes
            # The root's admin role is not the leaf's: `access` has no rule over users.
            with pytest.raises(AccessDenied, match="no role allows list on 'user'"):
                await alice.list_users()
        cert, key = await _root_user(pair, ["auditor"])
        async with await _as_root(pair, addr, cert, key) as unmapped:
            with pytest.raises(AccessDenied, match="map to no role of this cluster"):
                await unmapped.list_servers("node")
        # Once the leaf stops trusting the root, its users are refused on the next call.
        cert, key = await _root_user(pair, ["admin"])
        async with await _as_root(pair, addr, cert, key) as alice:
            await alice.list_servers("node")
            await pair.leaf.auth.trusted_clusters.remove(ROOT, "admin")
            pair.clock.advance(timedelta(seconds=2))
            await asyncio.sleep(ROOTS_REUSE)
            with pytest.raises(AccessDenied):
                await alice.list_servers("node")
    finally:
        await runner.cleanup()


async def test_the_roots_hosts_and_admins_are_nobody_on_the_leafs_api(pair: Pair) -> None:
    await pair.leaf.auth.trusted_clusters.save(pair.trusted(), "admin", overwrite=False)
    runner, addr = await _leaf_api(pair)
    try:
        for role in ("Proxy", "Node", "Admin"):
            key = tlskeys.generate_tls_key()
            # The root's CA signing a host of the root, or one claiming to be of the leaf.
            host = await pair.root.auth.certs.issue_host_certs(
                host_uuid=f"{role.lower()}-9", nodename=role.lower(), system_role=role,
                ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
                tls_public_key=tlskeys.tls_public_key_pem(key), addresses=[])
            async with await _as_root(pair, addr, host.tls_cert, key) as client:
                with pytest.raises(AccessDenied, match="taken here for its users only"):
                    await client.list_servers("node")
        root_tls = await pair.root.auth.certs.get_ca("tls", with_secrets=True)
        ca_key, ca_cert = authority.tls_signer(root_tls)
        key = tlskeys.generate_tls_key()
        forged = tlskeys.issue_tls_cert(
            ca_key, ca_cert, tlskeys.tls_public_key_pem(key),
            Identity(username="admin", roles=("Admin",), cluster=LEAF, system_role="Admin",
                     host_uuid="x"), now=pair.clock.now(),
            not_after=pair.clock.now() + timedelta(hours=1))
        async with await _as_root(pair, addr, forged.decode(), key) as client:
            with pytest.raises(AccessDenied, match="taken here for its users only"):
                await client.list_users()
    finally:
        await runner.cleanup()


# --- the root's web certificate ---------------------------------------------------------------

@pytest.fixture
async def self_signed_root() -> AsyncIterator[str]:
    """An HTTPS server on loopback with a self-signed certificate (a root proxy without
    `https_keypairs`), answering every path with 404 JSON; its address."""
    key, cert = tlskeys.self_signed_web_cert(["127.0.0.1"], now=datetime.now(timezone.utc))
    ctx = tlsconfig.ssl_server_context(cert, key, None, False)
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_root_whose_certificate_is_not_trusted_is_refused(self_signed_root: str) -> None:
    request = TrustedClusterValidation(token="t" * 16, certificate_authorities=[])
    with pytest.raises(ConnectionProblem, match="certificate verify failed"):
        await ask_root(self_signed_root, request)
    with pytest.raises(ConnectionProblem, match="certificate verify failed"):
        await root_cas(self_signed_root)
    # `teleport start --insecure`: the TLS handshake passes, the server's answer decides.
    with pytest.raises(ConnectionProblem, match="HTTP 404"):
        await ask_root(self_signed_root, request, insecure=True)
