"""Host keep-alives in the presence service: the host name claim to extend is remembered from
the record this process wrote (no read per heartbeat), for HOSTNAME_MEMORY at most; and a record
read after a keep-alive carries the moved expiry."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from teleport.backend.base import Item
from teleport.backend.memory import MemoryBackend
from teleport.backend.sqlite import SqliteBackend
from teleport.errors import NotFound
from teleport.services.presence import HOSTNAME_MEMORY, PresenceService
from teleport.types.resource import Metadata
from teleport.types.resources import Server, ServerSpec
from teleport.utils.clock import FakeClock


class CountingBackend(MemoryBackend):
    """The memory backend, counting reads of single items."""

    reads = 0

    async def get(self, key: bytes) -> Item:
        self.reads += 1
        return await super().get(key)


def node(hostname: str, clock: FakeClock) -> Server:
    return Server(kind="node", metadata=Metadata(name="uuid-1", expires=clock.now()
                                                 + timedelta(seconds=15)),
                  spec=ServerSpec(addr="127.0.0.1:3022", hostname=hostname))


async def announce(presence: PresenceService, server: Server) -> None:
    """What `Hosts.upsert_server` does with a whole record."""
    await presence.claim_hostname(server.spec.hostname, "uuid-1", server.metadata.expires)
    await presence.nodes.put(server)


async def test_a_keep_alive_after_a_whole_record_reads_nothing() -> None:
    clock = FakeClock()
    backend = CountingBackend(clock)
    presence = PresenceService(backend)
    await announce(presence, node("web", clock))
    backend.reads = 0
    for _ in range(5):
        clock.advance(timedelta(seconds=5))
        await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    assert backend.reads == 0
    clock.advance(timedelta(seconds=14))  # past the whole record's expiry, not the moved one
    stored = await presence.nodes.get("uuid-1")
    assert stored.metadata.expires == clock.now() + timedelta(seconds=1)
    assert await presence.hostname_owner("web") == "uuid-1"


async def test_a_renamed_host_keeps_its_new_claim_alive() -> None:
    clock = FakeClock()
    presence = PresenceService(MemoryBackend(clock))
    await announce(presence, node("web", clock))
    await announce(presence, node("db", clock))
    await presence.release_hostname("web", "uuid-1")
    clock.advance(timedelta(seconds=10))
    await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    clock.advance(timedelta(seconds=10))
    assert await presence.hostname_owner("db") == "uuid-1"


async def test_the_name_is_read_again_once_its_memory_is_old() -> None:
    """Another auth server sharing the store may have taken a rename: after HOSTNAME_MEMORY the
    record is read again, and an old name whose claim is gone sends the host's record whole."""
    clock = FakeClock()
    backend = CountingBackend(clock)
    presence, other = PresenceService(backend), PresenceService(backend)
    await announce(presence, node("web", clock))
    await announce(other, node("db", clock))  # the rename went through the other server
    await other.release_hostname("web", "uuid-1")
    backend.reads = 0
    with pytest.raises(NotFound):  # the remembered claim is gone: sent whole, and forgotten
        await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    assert backend.reads == 1
    for _ in range(int(HOSTNAME_MEMORY / timedelta(seconds=10))):
        clock.advance(timedelta(seconds=10))
        await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    assert backend.reads == 2  # once, when the memory was HOSTNAME_MEMORY old


async def test_a_keep_alive_is_one_write_request(tmp_path: Path) -> None:
    """The record and its name claim go to sqlite's group commit as one request: two cost two
    tasks and two futures on the loop per heartbeat (issue 20, 2,000 a second at 10,000)."""
    clock = FakeClock()
    backend = await SqliteBackend.open(tmp_path / "kv.db", clock)
    try:
        presence = PresenceService(backend)
        await announce(presence, node("web", clock))
        submitted: list[object] = []
        real_submit = backend._committer.submit

        async def counted(request: Any, *, patient: bool = False) -> Any:
            submitted.append(request)
            return await real_submit(request, patient=patient)

        backend._committer.submit = counted  # type: ignore[method-assign]
        clock.advance(timedelta(seconds=10))
        await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
        assert len(submitted) == 1
        clock.advance(timedelta(seconds=10))  # both moved: past the first expiry, both live
        assert await presence.hostname_owner("web") == "uuid-1"
        assert (await presence.nodes.get("uuid-1")).spec.hostname == "web"
        await presence.release_hostname("web", "uuid-1")
        with pytest.raises(NotFound):  # the claim gone: the host sends its record whole
            await presence.keep_alive("node", "uuid-1", clock.now() + timedelta(seconds=15))
    finally:
        await backend.close()
