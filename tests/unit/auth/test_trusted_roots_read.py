"""The trusted roots' CAs, asked for by every request to the auth API: when the last read is
old, concurrent requests share one read of the store instead of each starting its own."""

from __future__ import annotations

import asyncio

from teleport.auth.server import AuthServer, AuthSettings
from teleport.auth.trustedclusters import ROOTS_REUSE
from teleport.backend.base import Item
from teleport.backend.memory import MemoryBackend
from teleport.events.emitter import MemoryEmitter
from teleport.utils.clock import FakeClock


class SlowRanges(MemoryBackend):
    """A memory backend whose range reads take a loop turn (as a store's do), counted."""

    ranges = 0

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        self.ranges += 1
        await asyncio.sleep(0)
        return await super().get_range(start, end, limit)


async def test_requests_that_find_the_roots_old_share_one_read() -> None:
    clock = FakeClock()
    backend = SlowRanges(clock)
    auth = AuthServer(backend, MemoryEmitter(), clock, AuthSettings(cluster_name="example.com"))
    await auth.init()
    await asyncio.sleep(ROOTS_REUSE)  # whatever init read is old now
    backend.ranges = 0
    answers = await asyncio.gather(*(auth.trusted_clusters.root_tls_cas() for _ in range(50)))
    assert answers == [[]] * 50
    assert backend.ranges == 1
    await auth.trusted_clusters.root_tls_cas()  # fresh: reused
    assert backend.ranges == 1
