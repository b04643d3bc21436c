"""The proxy's cache following the auth API's watch stream: changes arrive within a second with no
poll, a lost stream resumes from the last change applied (or takes a fresh snapshot when the
auth server no longer has what it missed), an outage serves the last copy."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

import pytest

from teleport.auth import api as auth_api
from teleport.auth.identity_file import IdentityFile
from teleport.auth.server import AuthServer, AuthSettings
from teleport.backend.base import Item
from teleport.backend.fanout import RESUME_HISTORY
from teleport.cache import CachedAuth
from teleport.events.emitter import MemoryEmitter
from teleport.service.trust import TrustedCAs
from teleport.types.resources import CAKeys, SSHKeyPair
from tests.integration.cache.conftest import WITHIN, Api, arrives, following


def _names(cache: CachedAuth, kind: str = "node") -> set[str]:
    return {s.metadata.name for s in cache.copy(kind)}


async def test_a_heartbeat_reaches_the_copy_within_a_second_without_a_poll(api: Api) -> None:
    await api.announce("alpha")
    async with following(api) as cache:
        assert _names(cache) == {"alpha"}  # from the snapshot
        await api.announce("beta")
        await arrives(lambda: _names(cache) == {"alpha", "beta"}, "beta's heartbeat")
        # Reads are the copy's: the auth server is not asked.
        await api.stop()
        assert {s.metadata.name for s in await cache.list_servers("node")} == {"alpha", "beta"}


async def test_a_ca_change_reaches_the_copy_within_a_second_without_private_keys(
        api: Api) -> None:
    async with following(api) as cache:
        changed: list[str] = []
        cache.subscribe(changed.append)
        extra = await _trust_another_user_key(api)

        async def trusted() -> list[str]:
            return (await cache.get_ca("user")).trusted_ssh_public_keys()

        start = time.monotonic()
        while extra not in await trusted():
            assert time.monotonic() - start < WITHIN, "the CA change did not arrive"
            await asyncio.sleep(0.01)
        assert "cert_authority" in changed
        ssh = (await cache.get_ca("user")).spec.active_keys.ssh
        assert ssh and not any(k.private_key for k in ssh)
        tls = (await cache.get_ca("tls")).spec.active_keys.tls
        assert tls and not any(k.key for k in tls)


async def test_the_proxys_trusted_cas_follow_a_ca_change_within_a_second(api: Api) -> None:
    """As the proxy wires it: the cache's news wakes the trusted CAs, no 30 s wait."""
    async with following(api) as cache:
        identity = IdentityFile(role="Proxy", host_uuid="proxy-1", ssh_private_key="",
                                ssh_cert="", tls_private_key="", tls_cert="", tls_ca_certs=[])
        trust = TrustedCAs(cache, identity)
        cache.subscribe(lambda kind: trust.refresh_soon() if kind == "cert_authority" else None)
        task = asyncio.create_task(trust.run())
        try:
            extra = await _trust_another_user_key(api)
            await arrives(lambda: extra in trust.user_keys(), "the new key in the proxy's trust")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _trust_another_user_key(api: Api) -> str:
    """Add a public key to the user CA's trusted keys (as a rotation does); return it."""
    store = api.auth.certs.cas.store("user")
    ca = await store.get("cache.test")
    extra = (await api.auth.certs.get_ca("host")).trusted_ssh_public_keys()[0]
    await store.put(ca.model_copy(update={"spec": ca.spec.model_copy(update={
        "additional_trusted_keys": CAKeys(ssh=[SSHKeyPair(public_key=extra)])})}))
    return extra


async def test_an_expired_record_leaves_the_copy_while_the_stream_is_live(api: Api) -> None:
    await api.announce("short", ttl=timedelta(seconds=5))
    await api.announce("long", ttl=timedelta(minutes=5))
    async with following(api) as cache:
        assert _names(cache) == {"short", "long"}
        api.clock.advance(timedelta(seconds=10))
        await api.auth.hosts.list_servers("node")  # the memory backend expires on access
        await arrives(lambda: _names(cache) == {"long"}, "the expiry")


async def _outage_then_back(api: Api, cache: CachedAuth, meanwhile: int = 0) -> None:
    """Take the auth API down; while it is, a node leaves, a record expires, a node joins (and
    meanwhile other writes happen); check the last copy routes; bring it back."""
    await api.stop()
    await arrives(lambda: cache.outage, "the outage", within=5)
    await api.auth.hosts.presence.nodes.delete("beta")
    api.clock.advance(timedelta(minutes=5))
    await api.announce("gamma")
    for n in range(meanwhile):
        await api.auth.backend.put(Item(b"/elsewhere/%d" % n, b"x"))
    # Nobody can heartbeat now (as far as the proxy knows): the last copy routes.
    assert {s.metadata.name for s in await cache.list_servers("node")} == {"alpha", "beta"}
    assert (await cache.ping()).cluster_name == "cache.test"
    assert (await cache.get_ca("host")).trusted_ssh_public_keys()
    await api.start()
    await arrives(lambda: cache.live, "the stream again", within=3)


@pytest.mark.parametrize(("meanwhile", "healed_by"), [
    (0, "following its changes from where the cache stopped"),
    # More changes than the auth server keeps: it sends a snapshot instead.
    (RESUME_HISTORY, "auth server is back, cache refreshed")])
async def test_a_lost_stream_resumes_where_it_stopped_or_takes_a_fresh_snapshot(
        api: Api, caplog: pytest.LogCaptureFixture, meanwhile: int, healed_by: str) -> None:
    await api.announce("alpha")
    await api.announce("beta")
    async with following(api) as cache:
        with caplog.at_level(logging.INFO, logger="teleport.cache"):
            await _outage_then_back(api, cache, meanwhile)
            # Live again; a resumed stream's missed changes follow its init within moments.
            await arrives(lambda: _names(cache) == {"gamma"}, "the changes made meanwhile")
        assert not cache.outage
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "serving the last known copy" in warnings[0].message
        assert healed_by in caplog.text
        await api.announce("delta")
        await arrives(lambda: _names(cache) == {"gamma", "delta"}, "a change after the resync")


async def test_a_stream_lost_with_its_auth_server_resumes_on_another_one(
        api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Two auth servers on one store: when the one a proxy follows dies, the proxy's cache goes
    on from where it stopped through the other, missing nothing and re-reading nothing."""
    other = AuthServer(api.auth.backend, MemoryEmitter(), api.clock,
                       AuthSettings(cluster_name="cache.test"))
    await other.init()
    runner = await auth_api.serve(other, api.server_ctx, "127.0.0.1", 0)
    try:
        await api.announce("alpha")
        async with following(api, also=(runner.addresses[0][1],)) as cache:
            with caplog.at_level(logging.DEBUG, logger="teleport.cache"):
                await api.stop()
                await api.announce("beta")  # written while the stream moves over
                await arrives(lambda: _names(cache) == {"alpha", "beta"}, "the change", 5)
            assert "resumed from where the cache stopped" in caplog.text
            assert "snapshot" not in caplog.text and "refreshed" not in caplog.text
            await other.hosts.presence.nodes.delete("alpha")
            await arrives(lambda: _names(cache) == {"beta"}, "a change through the other")
    finally:
        await runner.cleanup()
