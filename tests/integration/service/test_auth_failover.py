"""A node configured with one auth server learns the others, keeps them in authservers.json, and
moves to another within a call when the one it uses stops.

Two real auth APIs on loopback share one backend (as two auth servers share etcd); each
announces itself as the auth service does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from teleport.auth.client import AuthClient
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.proxy.authrelay import AuthRelay
from teleport.service.authservers import FILE_NAME, AuthServerList, starting_auth_servers
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock
from tests.integration.auth_api import serve_auth_api


@dataclass
class Auth:
    server: AuthServer
    runner: web.AppRunner
    addr: HostPort

    async def announce(self, name: str) -> None:
        now = self.server.clock.now()
        await self.server.hosts.upsert_server(Server(
            kind="auth_server", metadata=Metadata(name=name, expires=now + timedelta(seconds=15)),
            spec=ServerSpec(addr=str(self.addr), hostname=name)))


@pytest.fixture
async def two() -> AsyncIterator[tuple[Auth, Auth]]:
    clock = FakeClock(datetime.now(UTC))
    backend = MemoryBackend(clock)
    auths = []
    for name in ("auth-a", "auth-b"):
        server = AuthServer(backend, MemoryEmitter(), clock, AuthSettings(cluster_name="ha.test"))
        await server.init()
        runner, addr = await serve_auth_api(server)
        auth = Auth(server, runner, addr)
        await auth.announce(name)
        auths.append(auth)
    try:
        yield auths[0], auths[1]
    finally:
        for auth in auths:
            await auth.runner.cleanup()


async def _node_client(auth: AuthServer, addrs: list[HostPort]) -> AuthClient:
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="node-1", nodename="node-1", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs])
    return AuthClient(addrs, ctx, timeout=10, cluster=auth.cluster_name)


async def test_node_learns_the_second_auth_server_and_fails_over_to_it(
        two: tuple[Auth, Auth], tmp_path: Path) -> None:
    a, b = two
    client = await _node_client(a.server, [a.addr])
    servers = AuthServerList(tmp_path, [a.addr], configured=[a.addr])
    servers.attach(client)
    task = asyncio.create_task(servers.run(client, interval=0.1))
    try:
        deadline = time.monotonic() + 5
        while b.addr not in client.addrs:
            assert time.monotonic() < deadline, client.addrs
            await asyncio.sleep(0.05)
        assert set(client.addrs) == {a.addr, b.addr}
        kept = json.loads((tmp_path / FILE_NAME).read_text())
        assert set(kept) == {str(a.addr), str(b.addr)}
        # The next start begins with what was learned, then the config's.
        assert set(starting_auth_servers(tmp_path, [a.addr])) == {a.addr, b.addr}
        await client.ping()

        await a.runner.cleanup()  # auth A dies
        started = time.monotonic()
        await client.ping()
        await client.upsert_server(Server(kind="node", metadata=Metadata(name="node-1"),
                                          spec=ServerSpec(addr="127.0.0.1:3022",
                                                          hostname="node-1")))
        assert time.monotonic() - started < 2
        assert client._http.preferred == str(b.addr)  # later calls go straight to B
        assert [s.metadata.name for s in await b.server.hosts.list_servers("node")] == ["node-1"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_an_answer_without_auth_servers_keeps_the_list(tmp_path: Path) -> None:
    first, configured = HostPort("127.0.0.1", 1), HostPort("10.0.0.9", 3025)
    servers = AuthServerList(tmp_path, [first], configured=[configured])
    assert not servers.learn([])
    assert not servers.learn(["127.0.0.1:abc"])
    assert servers() == [first]
    assert not (tmp_path / FILE_NAME).exists()
    # The configured address stays last: a balancer in front of the auth servers is never
    # announced, and must stay a way back in.
    assert servers.learn(["127.0.0.1:2"])
    assert servers() == [HostPort("127.0.0.1", 2), configured]


async def test_the_proxy_relay_dials_the_auth_server_that_accepted_last(
        two: tuple[Auth, Auth]) -> None:
    a, b = two
    relay = AuthRelay(lambda: [a.addr, b.addr])
    addr, _, writer = await relay.dial()
    assert addr == a.addr
    writer.close()
    await a.runner.cleanup()
    addr, _, writer = await relay.dial()
    assert addr == b.addr and relay.preferred == b.addr
    writer.close()
