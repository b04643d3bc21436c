"""The host listing relayed as stored (`ServerStore.list_json`): live records only, each with
its item's expiry, built off the loop's thread so heartbeats go on while 10,000 are listed."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from teleport.backend.memory import MemoryBackend
from teleport.services.presence import PresenceService
from teleport.types.resource import Metadata, format_time
from teleport.types.resources import Server, ServerSpec
from teleport.utils.clock import FakeClock


def node(i: int, clock: FakeClock, ttl: float = 15) -> Server:
    return Server(kind="node", metadata=Metadata(name=f"uuid-{i}", expires=clock.now()
                                                 + timedelta(seconds=ttl)),
                  spec=ServerSpec(addr=f"127.0.0.1:{3022 + i}", hostname=f"host-{i}"))


async def test_a_listing_has_the_live_records_with_their_moved_expiry() -> None:
    clock = FakeClock()
    presence = PresenceService(MemoryBackend(clock))
    for server in (node(1, clock), node(2, clock, ttl=5)):  # as `Hosts.upsert_server`
        await presence.claim_hostname(server.spec.hostname, server.metadata.name,
                                      server.metadata.expires)
        await presence.nodes.put(server)
    clock.advance(timedelta(seconds=4))
    await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    clock.advance(timedelta(seconds=2))  # node 2 has expired; node 1's expiry moved

    listed = json.loads(await presence.nodes.list_json(clock.now()))

    assert [r["metadata"]["name"] for r in listed] == ["uuid-1"]
    assert listed[0]["metadata"]["expires"] == format_time(clock.now() + timedelta(seconds=13))
    assert listed[0]["spec"]["hostname"] == "host-1"


async def test_the_loop_serves_others_while_a_listing_is_built() -> None:
    clock = FakeClock()
    presence = PresenceService(MemoryBackend(clock))
    for i in range(20_000):
        await presence.nodes.put(node(i, clock))
    turns = 0

    async def other_work() -> None:  # a heartbeat's handler, say
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    body = await presence.nodes.list_json(clock.now())
    during = turns - before
    other.cancel()
    assert len(json.loads(body)) == 20_000
    # On the loop's thread the whole array was one turn: nothing else ran meanwhile.
    assert during >= 100, f"the loop ran {during} other turns while 20,000 records were listed"
