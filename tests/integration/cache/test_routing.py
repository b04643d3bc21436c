"""Routing from the proxy's cache at scale: a node named by UUID, hostname, `hostname.cluster` or
address is looked up in the copy's index, and while the watch stream is live the auth server is
never asked for the node list (its requests are counted) — not per connection, not on a timer."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta

import pytest

from teleport.cache import replica
from teleport.errors import BadParameter, NotFound
from teleport.service.resolve import NodeResolver
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from tests.integration.cache.conftest import Api, arrives, following

#: Enough nodes that a full list per connection shows up in the count and in the time.
FLEET = 2000
LIST_NODES = "GET /v1/servers/node"
CLUSTER = "cache.test"


async def _fleet(api: Api, count: int = FLEET) -> None:
    """Register count nodes dialled over TCP, each with its own hostname and address."""
    expires = api.clock.now() + timedelta(minutes=10)
    for i in range(count):
        await api.auth.hosts.upsert_server(Server(
            kind="node", metadata=Metadata(name=f"uuid-{i}", expires=expires),
            spec=ServerSpec(addr=f"10.1.{i // 256}.{i % 256}:3022", hostname=f"host-{i}")))


async def _node(api: Api, name: str, hostname: str, addr: str = "", tunnel: bool = False,
                ttl: timedelta = timedelta(minutes=10)) -> None:
    await api.auth.hosts.upsert_server(Server(
        kind="node", metadata=Metadata(name=name, expires=api.clock.now() + ttl),
        spec=ServerSpec(addr=addr, hostname=hostname, use_tunnel=tunnel)))


async def test_a_node_is_routed_by_every_name_without_listing_the_nodes(api: Api) -> None:
    await _fleet(api)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    await _node(api, "uuid-target", "target", f"127.0.0.1:{port}")
    for twin in ("uuid-twin-1", "uuid-twin-2"):  # as a store from before hostname claims has them
        await api.auth.hosts.presence.store("node").put(Server(
            kind="node", metadata=Metadata(name=twin, expires=api.clock.now() + timedelta(hours=1)),
            spec=ServerSpec(addr="10.2.0.1:3022", hostname="twin")))
    await _node(api, "uuid-natted", "natted", tunnel=True)
    await _node(api, "uuid-short", "short", "10.2.0.3:3022", ttl=timedelta(seconds=5))
    try:
        async with following(api, within=20) as cache:
            resolver = NodeResolver(cache, CLUSTER)
            listed = api.requests[LIST_NODES]

            async def routed(host: str, port: int = 0) -> str:
                return (await resolver.resolve_node(host, port)).metadata.name

            for name in ("uuid-target", "target", f"target.{CLUSTER}", "uuid-target.cache.test"):
                assert await routed(name) == "uuid-target"
            assert await routed("127.0.0.1", port) == "uuid-target"
            assert await routed("127.0.0.1", 22) == "uuid-target"  # `ssh -J` asks for port 22
            assert await routed("host-1234") == "uuid-1234"
            assert await routed("10.1.4.210", 3022) == "uuid-1234"
            # A shared hostname names no one node; each UUID still does.
            with pytest.raises(BadParameter, match="matches 2 nodes; use the node's UUID"):
                await routed("twin")
            assert await routed("uuid-twin-2") == "uuid-twin-2"
            with pytest.raises(BadParameter, match="matches 2 nodes"):
                await routed("10.2.0.1", 3022)
            assert await routed("natted") == "uuid-natted"  # reached over its tunnel
            with pytest.raises(NotFound, match="not registered"):
                await routed("10.9.9.9")
            # The whole dial, as a user's connection takes it.
            sock = await resolver.dial("target", 0)
            sock.close()
            # An expired record leaves the index as the stream says so.
            api.clock.advance(timedelta(seconds=10))
            await api.auth.hosts.list_servers("node")  # the memory backend expires on access
            await arrives(lambda: "uuid-short" not in {s.metadata.name for s in cache.copy("node")},
                          "the expiry")
            with pytest.raises(NotFound):
                await routed("short")
            assert api.requests[LIST_NODES] == listed == 0
    finally:
        listener.close()


async def test_routing_is_a_lookup_not_a_scan(api: Api) -> None:
    """Routing stays cheap however many nodes there are: a scan of 2,000 records per
    connection takes milliseconds, a lookup microseconds (a 50x margin here)."""
    await _fleet(api)
    async with following(api, within=20) as cache:
        resolver = NodeResolver(cache, CLUSTER)
        start = time.perf_counter()
        for i in range(FLEET):
            assert (await resolver.resolve_node(f"host-{i}", 0)).metadata.name == f"uuid-{i}"
            took = time.perf_counter() - start
            assert took < 1.0, f"{i + 1} routings among {FLEET} nodes took {took:.2f} s"


async def test_nothing_re_lists_the_nodes_on_a_timer(api: Api,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica, "PING_INTERVAL", 0.05)
    await _fleet(api, 10)
    async with following(api):
        pings = api.requests["GET /v1/ping"]
        await asyncio.sleep(0.5)
        assert api.requests["GET /v1/ping"] >= pings + 3  # the ping answer does refresh
    assert not any(r.startswith("GET /v1/servers/") for r in api.requests), api.requests


async def test_routing_reads_through_while_no_stream_is_live(api: Api) -> None:
    """The one case routing asks the auth server (and the count above sees it): before the
    first snapshot, or while the stream is down but the auth server answers."""
    await _node(api, "uuid-a", "alpha", "10.2.0.1:3022")
    async with await api.cache() as cache:
        resolver = NodeResolver(cache, CLUSTER)
        assert (await resolver.resolve_node("alpha", 0)).metadata.name == "uuid-a"
        await _node(api, "uuid-b", "beta", "10.2.0.2:3022")
        assert (await resolver.resolve_node("beta", 0)).metadata.name == "uuid-b"
        assert api.requests[LIST_NODES] == 2
        # The auth server gone, the last list routes.
        await api.stop()
        assert (await resolver.resolve_node("10.2.0.2", 22)).metadata.name == "uuid-b"
        assert cache.outage
