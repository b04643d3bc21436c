"""The proxy's cache against a real auth API on loopback: read-through, outages, expiry."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from teleport.errors import ConnectionProblem
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from tests.integration.cache.conftest import Api


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
