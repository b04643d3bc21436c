"""Finding 1 of the security audit: a certificate of the cluster's TLS CA that is not the auth
server's never passes for the auth server.

An attacker who can intercept traffic to the auth address stands up a TLS server with the
certificate he holds (a user's from `tsh login`, or a host's) and relays to the real auth server.
The node, the proxy, tctl and a joining host must refuse him before sending a single byte of a
request, so he learns no password, OTP or join token and can feed nobody his own CA.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from aiohttp import web

from teleport.auth.client import AuthClient
from teleport.auth.join import join
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.config import StaticToken
from teleport.errors import ConnectionProblem
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.keys.pin import ca_pin
from teleport.types.resource import Metadata
from teleport.types.resources import User, UserSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api

TOKEN = "static-join-token-1"


@dataclass
class Impostor:
    """A TLS server holding a stolen cluster certificate that relays to the real auth server."""

    addr: HostPort
    seen: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass
class Cluster:
    auth: AuthServer
    addr: HostPort


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    clock = FakeClock(datetime.now(timezone.utc))
    backend = MemoryBackend(clock)
    auth = AuthServer(backend, MemoryEmitter(), clock, AuthSettings(
        cluster_name="mitm.test",
        static_tokens=(StaticToken(roles=frozenset({"node"}), token=TOKEN),)))
    await auth.init()
    runner, addr = await serve_auth_api(auth)
    try:
        yield Cluster(auth, addr)
    finally:
        await runner.cleanup()
        await backend.close()


async def _certificate(auth: AuthServer, kind: str) -> tuple[bytes, bytes]:
    """Return (cert, key) that a cluster member of this kind legitimately holds."""
    tls_key = tlskeys.generate_tls_key()
    ssh_key = sshkeys.public_key_of(sshkeys.generate_private_key())
    public = tlskeys.tls_public_key_pem(tls_key)
    if kind == "user":
        user = User(metadata=Metadata(name="mallory"),
                    spec=UserSpec(roles=["admin"], traits={"logins": ["root"]}))
        certs = await auth.certs.issue_user_certs(user, ssh_key, public, timedelta(hours=1))
    else:
        # A host that joined legitimately, and even put the auth server's address in its names.
        certs = await auth.certs.issue_host_certs(host_uuid=f"{kind}-evil", nodename="evil",
                                            system_role=kind, ssh_public_key=ssh_key,
                                            tls_public_key=public, addresses=["127.0.0.1"])
    return certs.tls_cert.encode(), tls_key


@pytest.fixture(params=["user", "Node", "Proxy"])
async def impostor(request: pytest.FixtureRequest, cluster: Cluster) -> AsyncIterator[Impostor]:
    cert, key = await _certificate(cluster.auth, request.param)
    cas = [c.encode() for c in (await cluster.auth.certs.get_ca("tls")).trusted_tls_certs()]
    real = AuthClient([cluster.addr], tlsconfig.ssl_client_context(cert, key, cas),
                      cluster=cluster.auth.cluster_name)
    seen: list[tuple[str, str, bytes]] = []

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append((request.method, request.path, body))
        # What he can answer without the auth role: the public CA, as the real server would.
        tls = await cluster.auth.certs.get_ca("tls")
        return web.json_response({"cluster_name": cluster.auth.cluster_name,
                                  "tls_ca_certs": tls.trusted_tls_certs()})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = tlsconfig.ssl_server_context(cert, key, cas, require_client_cert=False)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    try:
        yield Impostor(HostPort("127.0.0.1", runner.addresses[0][1]), seen)
    finally:
        await real.close()
        await runner.cleanup()


async def _node_client(cluster: Cluster, addrs: list[HostPort]) -> AuthClient:
    cert, key = await _certificate(cluster.auth, "Node")
    cas = [c.encode() for c in (await cluster.auth.certs.get_ca("tls")).trusted_tls_certs()]
    return AuthClient(addrs, tlsconfig.ssl_client_context(cert, key, cas), timeout=10,
                      cluster=cluster.auth.cluster_name)


async def test_node_refuses_an_impostor_holding_a_cluster_certificate(
        cluster: Cluster, impostor: Impostor) -> None:
    async with await _node_client(cluster, [impostor.addr]) as client:
        with pytest.raises(ConnectionProblem, match="certificate"):
            await client.get_ca("user")
    assert impostor.seen == []


async def test_node_skips_the_impostor_and_reaches_the_real_auth_server(
        cluster: Cluster, impostor: Impostor) -> None:
    async with await _node_client(cluster, [impostor.addr, cluster.addr]) as client:
        ca = await client.get_ca("user")
    assert ca.spec.cluster_name == "mitm.test"
    assert impostor.seen == []


async def test_proxy_never_relays_a_login_to_an_impostor(cluster: Cluster,
                                                         impostor: Impostor) -> None:
    async with await _node_client(cluster, [impostor.addr]) as client:
        with pytest.raises(ConnectionProblem):
            await client.authenticate_ssh(
                "joe", password="joe's password", otp_code="123456",
                ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
                tls_public_key=tlskeys.tls_public_key_pem(tlskeys.generate_tls_key()),
                ttl=None, remote_addr="127.0.0.1")
    assert not any(b"password" in body for _, _, body in impostor.seen)


async def test_pinned_join_never_sends_the_token_to_an_impostor(cluster: Cluster,
                                                                impostor: Impostor) -> None:
    pin = ca_pin((await cluster.auth.certs.get_ca("tls")).trusted_tls_certs()[0].encode())
    with pytest.raises(ConnectionProblem, match="certificate"):
        await join([impostor.addr], token=TOKEN, role="Node", host_uuid="new-node",
                   nodename="new-node", addresses=[], ca_pins=[pin], warn=lambda _: None)
    # He served the (public) CA, which matched the pin; the token never reached him.
    assert [(m, p) for m, p, _ in impostor.seen] == [("GET", "/v1/join/ca")]
    # The same join against the real auth server works.
    result = await join([cluster.addr], token=TOKEN, role="Node", host_uuid="new-node",
                        nodename="new-node", addresses=[], ca_pins=[pin], warn=lambda _: None)
    assert result.cluster_name == "mitm.test"


async def test_stream_and_upload_paths_check_the_name_too(cluster: Cluster,
                                                          impostor: Impostor) -> None:
    async with await _node_client(cluster, [impostor.addr]) as client:
        with pytest.raises(ConnectionProblem):
            async for _ in client.stream_recording("00000000-0000-0000-0000-000000000000"):
                pass
    assert impostor.seen == []


async def test_plain_tls_client_without_the_name_cannot_be_fooled_either(
        cluster: Cluster, impostor: Impostor) -> None:
    """The name check lives in the context: a caller who forgets the name fails closed."""
    cert, key = await _certificate(cluster.auth, "Node")
    cas = [c.encode() for c in (await cluster.auth.certs.get_ca("tls")).trusted_tls_certs()]
    ctx = tlsconfig.ssl_client_context(cert, key, cas)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"https://{impostor.addr}/v1/ping", ssl=ctx)
    await asyncio.sleep(0)
    assert impostor.seen == []
