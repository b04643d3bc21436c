"""Heartbeat keep-alives (issue 20): an unchanged record only has its expiry moved, over the real
auth API; a change, a vanished record or a failure sends it whole; the proxy's copy keeps the node
past the expiry its last whole record carried, and drops it at the extended one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest

from teleport.auth.client import AuthClient
from teleport.errors import AccessDenied, NotFound
from teleport.keys import ssh as sshkeys
from teleport.keys import tls as tlskeys
from teleport.keys import tlsconfig
from teleport.service.health import Health
from teleport.service.heartbeat import SERVER_TTL, Heartbeat, heartbeat_forever
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.addr import HostPort
from tests.integration.cache.conftest import Api, arrives, following

FULL, KEEP = "PUT /v1/servers", "PUT /v1/servers/keepalive"


@pytest.fixture
async def node(api: Api) -> AsyncIterator[AuthClient]:
    """An auth client holding node-1's own host identity."""
    tls_key = tlskeys.generate_tls_key()
    certs = await api.auth.certs.issue_host_certs(
        host_uuid="node-1", nodename="web", system_role="Node",
        ssh_public_key=sshkeys.public_key_of(sshkeys.generate_private_key()),
        tls_public_key=tlskeys.tls_public_key_pem(tls_key), addresses=[])
    ctx = tlsconfig.ssl_client_context(certs.tls_cert.encode(), tls_key,
                                       [c.encode() for c in certs.tls_ca_certs])
    async with AuthClient([HostPort("127.0.0.1", api.port)], ctx, timeout=5,
                          cluster=api.auth.cluster_name) as client:
        yield client


class Record:
    """What the node announces; tests change its labels."""

    def __init__(self) -> None:
        self.labels = {"env": "prod"}

    def __call__(self) -> Server:
        return Server(kind="node", metadata=Metadata(name="node-1", labels=dict(self.labels)),
                      spec=ServerSpec(addr="127.0.0.1:3022", hostname="web"))


async def _stored(api: Api) -> Server:
    return await api.auth.hosts.presence.nodes.get("node-1")


async def test_an_unchanged_record_is_kept_alive_without_being_sent(api: Api,
                                                                    node: AuthClient) -> None:
    beat = Heartbeat(node, Record(), api.clock)
    await beat.beat()
    first = await _stored(api)
    api.clock.advance(timedelta(seconds=10))
    await beat.beat()
    assert (api.requests[FULL], api.requests[KEEP]) == (1, 1)
    # Past the first expiry, the record lives on with the keep-alive's, as listed and as read.
    api.clock.advance(timedelta(seconds=10))
    listed = await api.auth.hosts.list_servers("node")
    assert [s.metadata.name for s in listed] == ["node-1"]
    assert listed[0].metadata.expires == first.metadata.expires + timedelta(seconds=10)
    assert listed[0].metadata.labels == {"env": "prod"}
    # The API's listing (relayed as stored) says the same.
    assert await node.list_servers("node") == listed
    # ... and so is its host name: nobody else may take it meanwhile.
    assert await api.auth.hosts.presence.hostname_owner("web") == "node-1"
    # Without further beats it expires at the extended time, name included.
    api.clock.advance(SERVER_TTL)
    assert await api.auth.hosts.list_servers("node") == []
    assert await node.list_servers("node") == []
    assert await api.auth.hosts.presence.hostname_owner("web") is None


async def test_a_changed_label_sends_the_whole_record(api: Api, node: AuthClient) -> None:
    record = Record()
    beat = Heartbeat(node, record, api.clock)
    await beat.beat()
    record.labels["env"] = "staging"
    await beat.beat()
    assert (api.requests[FULL], api.requests[KEEP]) == (2, 0)
    assert (await _stored(api)).metadata.labels == {"env": "staging"}


async def test_a_vanished_record_is_sent_again_at_once(api: Api, node: AuthClient) -> None:
    beat = Heartbeat(node, Record(), api.clock)
    await beat.beat()
    await api.auth.hosts.presence.nodes.delete("node-1")  # `tctl rm`, or an expiry
    await beat.beat()
    assert (api.requests[FULL], api.requests[KEEP]) == (2, 1)
    assert (await _stored(api)).metadata.labels == {"env": "prod"}
    # Its name claim is back too: the next keep-alive finds both.
    await beat.beat()
    assert api.requests[KEEP] == 2 and api.requests[FULL] == 2


async def test_a_lost_name_claim_sends_the_whole_record(api: Api, node: AuthClient) -> None:
    beat = Heartbeat(node, Record(), api.clock)
    await beat.beat()
    await api.auth.hosts.presence.release_hostname("web", "node-1")
    await beat.beat()
    assert api.requests[FULL] == 2
    assert await api.auth.hosts.presence.hostname_owner("web") == "node-1"


async def test_after_a_failure_the_whole_record_goes_out(api: Api, node: AuthClient) -> None:
    beat = Heartbeat(node, Record(), api.clock)
    await beat.beat()
    await api.stop()
    with pytest.raises(Exception):  # noqa: B017, PT011 - any transport failure
        await beat.beat()
    await api.start()
    await beat.beat()  # the failed keep-alive never arrived; this one is whole
    assert (api.requests[FULL], api.requests[KEEP]) == (2, 0)


async def test_past_its_expiry_the_record_goes_out_whole_without_a_keep_alive(
        api: Api, node: AuthClient) -> None:
    """A keep-alive after the expiry could only come back NotFound: a round trip more for a
    loaded auth server, whose late answers are what let the record expire (issue 20)."""
    beat = Heartbeat(node, Record(), api.clock)
    await beat.beat()
    api.clock.advance(timedelta(seconds=10))
    await beat.beat()  # kept alive until 25 s
    api.clock.advance(timedelta(seconds=15))  # at 25 s: gone
    await beat.beat()
    assert (api.requests[FULL], api.requests[KEEP]) == (2, 1)
    assert (await _stored(api)).metadata.expires == _expiry(api)


async def test_beats_start_every_interval_however_long_one_took(api: Api,
                                                                node: AuthClient) -> None:
    """A slow beat does not push the next one an interval later: answers delayed by a loaded
    auth server no longer add up to the TTL."""
    starts: list[float] = []
    record = Record()

    def slow_record() -> Server:
        starts.append(time.monotonic())
        time.sleep(0.15)  # this beat takes most of the interval
        return record()

    task = asyncio.create_task(heartbeat_forever(node, slow_record, api.clock, Health(),
                                                 interval=0.2))
    try:
        await arrives(lambda: len(starts) >= 4, "four beats")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) < 0.33, gaps  # slept after the answer, every one was 0.35 s or more


async def test_the_record_goes_out_whole_every_announce_period(api: Api,
                                                               node: AuthClient) -> None:
    beat = Heartbeat(node, Record(), api.clock, announce_every=timedelta(minutes=1))
    for _ in range(13):
        await beat.beat()
        api.clock.advance(timedelta(seconds=5))
    assert (api.requests[FULL], api.requests[KEEP]) == (2, 11)


async def test_a_host_keeps_only_itself_alive(api: Api, node: AuthClient) -> None:
    await api.announce("node-2")
    expires = api.clock.now() + timedelta(hours=1)
    with pytest.raises(AccessDenied):
        await node.keep_alive_server("node", "node-2", expires)
    with pytest.raises(AccessDenied):
        await node.keep_alive_server("proxy", "node-1", expires)
    with pytest.raises(NotFound):  # its own, not announced yet
        await node.keep_alive_server("node", "node-1", expires)
    stored = await api.auth.hosts.presence.nodes.get("node-2")
    assert stored.metadata.expires != expires


async def test_the_proxys_copy_keeps_a_kept_alive_node_until_its_extended_expiry(
        api: Api, node: AuthClient) -> None:
    beat = Heartbeat(node, Record(), api.clock)
    await beat.beat()
    async with following(api) as cache:
        assert [s.metadata.name for s in cache.copy("node")] == ["node-1"]
        for _ in range(4):  # 20 s of keep-alives: past the whole record's 15 s expiry
            api.clock.advance(timedelta(seconds=5))
            await beat.beat()
        await api.auth.hosts.list_servers("node")  # the memory backend expires on access
        assert [s.metadata.name for s in cache.copy("node")] == ["node-1"]
        assert api.requests[KEEP] == 4
        api.clock.advance(SERVER_TTL)
        await api.auth.hosts.list_servers("node")
        await arrives(lambda: cache.copy("node") == [], "the expiry's delete")
    # A snapshot (a new stream) carries the record with the expiry the keep-alives gave it.
    await beat.beat()
    api.clock.advance(timedelta(seconds=5))
    await beat.beat()
    async with following(api) as cache:
        copied = cache.copy("node")
        assert copied[0].metadata.expires == _expiry(api)


def _expiry(api: Api) -> datetime:
    return api.clock.now() + SERVER_TTL
