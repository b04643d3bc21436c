"""The proxy's cache against a real auth API on loopback: read-through, outages, expiry."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web

from teleport.auth import api as auth_api
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.memory import MemoryBackend
from teleport.cache import CachedAuth
from teleport.errors import ConnectionProblem
from teleport.events.emitter import MemoryEmitter
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from teleport.utils.clock import FakeClock


@dataclass
class Api:
    auth: AuthServer
    clock: FakeClock
    server_ctx: ssl.SSLContext
    port: int
    runner: web.AppRunner | None

    async def stop(self) -> None:
        """Take the auth API off the network, as if the auth server were down."""
        assert self.runner is not None
        await self.runner.cleanup()
        self.runner = None

    async def start(self) -> None:
        """Serve the API again on the same port, as a restarted auth server would."""
        self.runner = await auth_api.serve(self.auth, self.server_ctx, "127.0.0.1", self.port)

    async def cache(self) -> CachedAuth:
        """Return a cache holding a fresh Proxy identity."""
        tls_key = tlskeys.generate_tls_key()
        certs = await self.auth.certs.issue_host_certs(
            host_uuid="proxy-1", nodename="proxy", system_role="Proxy",
            ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
            tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
        ctx = tlskeys.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                         [c.encode() for c in certs.tls_ca_certs])
        return CachedAuth([HostPort("127.0.0.1", self.port)], ctx, timeout=5,
                          cluster=self.auth.cluster_name)

    async def announce(self, name: str, ttl: timedelta = timedelta(seconds=15)) -> None:
        await self.auth.hosts.upsert_server(Server(
            kind="node", metadata=Metadata(name=name, expires=self.clock.now() + ttl),
            spec=ServerSpec(addr="127.0.0.1:3022", hostname=name)))


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    clock = FakeClock(datetime.now(timezone.utc))
    auth = AuthServer(MemoryBackend(clock), MemoryEmitter(), clock,
                      AuthSettings(cluster_name="cache.test"))
    await auth.init()
    tls_key = tlskeys.generate_tls_key()
    certs = await auth.certs.issue_host_certs(
        host_uuid="auth-1", nodename="auth", system_role="Auth",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=["127.0.0.1"])
    ctx = tlskeys.ssl_server_context(certs.tls_cert.encode(), tls_key,
                                     [c.encode() for c in certs.tls_ca_certs],
                                     require_client_cert=False)
    runner = await auth_api.serve(auth, ctx, "127.0.0.1", 0)
    api = Api(auth, clock, ctx, runner.addresses[0][1], runner)
    try:
        yield api
    finally:
        if api.runner is not None:
            await api.runner.cleanup()


def _names(servers: list[Server]) -> set[str]:
    return {s.metadata.name for s in servers}


async def test_presence_is_read_through_while_the_auth_server_answers(api: Api) -> None:
    await api.announce("alpha")
    async with await api.cache() as cache:
        assert await cache.refresh()
        await api.announce("beta")
        # A node that just joined is routable at once, not after the next refresh.
        assert _names(await cache.list_servers("node")) == {"alpha", "beta"}
        assert (await cache.ping()).cluster_name == "cache.test"
        ca = await cache.get_ca("user")
        assert ca.trusted_ssh_public_keys() == (await api.auth.certs.get_ca("user")).trusted_ssh_public_keys()


async def test_a_cold_cache_reads_through(api: Api) -> None:
    await api.announce("alpha")
    async with await api.cache() as cache:
        assert _names(await cache.list_servers("node")) == {"alpha"}
        await api.stop()
        with pytest.raises(ConnectionProblem):
            await cache.get_ca("user")
        with pytest.raises(ConnectionProblem):
            await cache.list_servers("proxy")


async def test_an_outage_serves_the_last_copy_even_past_expiry(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    await api.announce("alpha")
    async with await api.cache() as cache:
        assert await cache.refresh()
        await api.stop()
        with caplog.at_level(logging.INFO, logger="teleport.cache"):
            # The first failed read notices the outage; the refresh loop would too.
            assert _names(await cache.list_servers("node")) == {"alpha"}
            assert cache.outage
            assert not await cache.refresh()
            # Nobody can heartbeat now: the record expires, and routing must not care.
            api.clock.advance(timedelta(minutes=5))
            assert _names(await cache.list_servers("node")) == {"alpha"}
            assert (await cache.ping()).cluster_name == "cache.test"
            assert (await cache.get_ca("host")).trusted_ssh_public_keys()
            warnings = [r for r in caplog.records
                        if r.name == "teleport.cache" and r.levelno == logging.WARNING]
            assert len(warnings) == 1, "one warning per outage"
            await api.start()
            assert await cache.refresh()
            assert "auth server is back" in caplog.text
        # Reachable again: the auth server's answer (expired records hidden) wins.
        assert await cache.list_servers("node") == []


async def test_expiry_is_respected_while_the_auth_server_answers(api: Api) -> None:
    await api.announce("short", ttl=timedelta(seconds=5))
    await api.announce("long", ttl=timedelta(minutes=5))
    async with await api.cache() as cache:
        assert await cache.refresh()
        api.clock.advance(timedelta(seconds=10))
        assert _names(await cache.list_servers("node")) == {"long"}


async def test_writes_still_reach_the_auth_server(api: Api) -> None:
    async with await api.cache() as cache:
        assert await cache.refresh()
        await cache.upsert_server(Server(kind="proxy", metadata=Metadata(name="proxy-1"),
                                         spec=ServerSpec(addr="127.0.0.1:3023", hostname="proxy")))
        assert _names(await api.auth.hosts.list_servers("proxy")) == {"proxy-1"}
        assert _names(await cache.list_servers("proxy")) == {"proxy-1"}
