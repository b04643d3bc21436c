"""Two auth servers' views of one store: memory, one sqlite file, or two connections to it.

Races here are real: the memory backend finishes each call without yielding, so it is wrapped to
yield to the loop before every call, letting gathered writers interleave between their steps
the way they do over sqlite's worker thread or a network backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from teleport.backend.base import Backend, Item, Watcher
from teleport.backend.memory import MemoryBackend
from teleport.backend.sqlite import SqliteBackend
from teleport.utils.clock import FakeClock


class Interleaved(Backend):
    """A backend that yields to the loop before each call, so concurrent writers interleave."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.clock = inner.clock

    async def get(self, key: bytes) -> Item:
        await asyncio.sleep(0)
        return await self.inner.get(key)

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        await asyncio.sleep(0)
        return await self.inner.get_range(start, end, limit)

    async def create(self, item: Item) -> Item:
        await asyncio.sleep(0)
        return await self.inner.create(item)

    async def put(self, item: Item) -> Item:
        await asyncio.sleep(0)
        return await self.inner.put(item)

    async def update(self, item: Item) -> Item:
        await asyncio.sleep(0)
        return await self.inner.update(item)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        await asyncio.sleep(0)
        return await self.inner.compare_and_swap(expected, replace)

    async def delete(self, key: bytes) -> None:
        await asyncio.sleep(0)
        await self.inner.delete(key)

    async def delete_range(self, start: bytes, end: bytes) -> None:
        await asyncio.sleep(0)
        await self.inner.delete_range(start, end)

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        await asyncio.sleep(0)
        await self.inner.keep_alive(key, expires)

    async def watch(self, prefixes: Sequence[bytes]) -> Watcher:
        return await self.inner.watch(prefixes)

    async def close(self) -> None:
        await self.inner.close()


@dataclass(frozen=True)
class Shared:
    """The storage two auth servers share: each writes through its own backend object."""

    clock: FakeClock
    first: Backend
    second: Backend


@pytest.fixture(params=["memory", "sqlite", "sqlite-two-connections"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    clock = FakeClock()
    if request.param == "memory":
        memory = Interleaved(MemoryBackend(clock))
        backends: list[Backend] = [memory, memory]
    elif request.param == "sqlite":
        one = await SqliteBackend.open(tmp_path / "sqlite.db", clock)
        backends = [one, one]
    else:
        backends = [await SqliteBackend.open(tmp_path / "sqlite.db", clock) for _ in range(2)]
    try:
        yield Shared(clock, backends[0], backends[1])
    finally:
        for backend in {id(b): b for b in backends}.values():
            await backend.close()
