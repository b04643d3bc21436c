"""The in-memory backend for tests and caches.

Expiry follows the injected clock and is applied lazily: every operation first drops the items
whose time has come and tells watchers, so a test moves a FakeClock instead of sleeping.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import itertools
from collections.abc import Sequence
from datetime import datetime

from teleport.backend.base import Backend, Event, EventType, Item, Watcher
from teleport.backend.fanout import RESUME_HISTORY, EventFanout, check_item, show_key
from teleport.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    NotFound,
)
from teleport.utils.clock import Clock, RealClock


class MemoryBackend(Backend):
    """Keep items in a sorted list so tests and caches get real range semantics without files."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or RealClock()
        self._keys: list[bytes] = []
        self._items: dict[bytes, Item] = {}
        # (expires, key) min-heap; entries go stale when an item is replaced and are skipped.
        self._expiries: list[tuple[datetime, bytes]] = []
        self._revisions = itertools.count(1)
        self._fanout = EventFanout(history=RESUME_HISTORY)
        self.store_id = self._fanout.history_id
        self._closed = False

    def _live(self) -> None:
        """Drop expired items and announce them, so the operation that follows sees live state."""
        if self._closed:
            raise ConnectionProblem("memory backend is closed")
        now = self.clock.now()
        gone: list[Event] = []
        while self._expiries and self._expiries[0][0] <= now:
            expires, key = heapq.heappop(self._expiries)
            item = self._items.get(key)
            if item is not None and item.expires == expires:
                self._remove(key)
                gone.append(Event(EventType.DELETE, self._tombstone(key)))
        self._fanout.emit(gone)

    def _tombstone(self, key: bytes) -> Item:
        """A deleted key's event item; deletes take a revision so a watch can resume past them."""
        return Item(key, b"", None, str(next(self._revisions)))

    def _remove(self, key: bytes) -> None:
        del self._items[key]
        del self._keys[bisect.bisect_left(self._keys, key)]

    def _store(self, item: Item) -> Item:
        stored = dataclasses.replace(item, revision=str(next(self._revisions)))
        if stored.key not in self._items:
            bisect.insort(self._keys, stored.key)
        self._items[stored.key] = stored
        if stored.expires is not None:
            heapq.heappush(self._expiries, (stored.expires, stored.key))
        self._fanout.emit([Event(EventType.PUT, stored)])
        return stored

    def _existing(self, key: bytes) -> Item:
        item = self._items.get(key)
        if item is None:
            raise NotFound(f"key {show_key(key)} not found")
        return item

    async def get(self, key: bytes) -> Item:
        self._live()
        return self._existing(key)

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        if limit < 0:
            raise BadParameter(f"range limit must not be negative, got {limit}")
        self._live()
        first = bisect.bisect_left(self._keys, start)
        last = max(first, bisect.bisect_left(self._keys, end))
        if limit:
            last = min(last, first + limit)
        return [self._items[k] for k in self._keys[first:last]]

    async def create(self, item: Item) -> Item:
        check_item(item)
        self._live()
        if item.key in self._items:
            raise AlreadyExists(f"key {show_key(item.key)} already exists")
        return self._store(item)

    async def put(self, item: Item) -> Item:
        check_item(item)
        self._live()
        return self._store(item)

    async def update(self, item: Item) -> Item:
        check_item(item)
        self._live()
        self._existing(item.key)
        return self._store(item)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter(
                f"compare_and_swap keys differ: {show_key(expected.key)} and {show_key(replace.key)}")
        self._live()
        current = self._existing(expected.key)
        if current.value != expected.value or (
                expected.revision and expected.revision != current.revision):
            raise CompareFailed(f"key {show_key(expected.key)} has changed")
        return self._store(replace)

    async def delete(self, key: bytes) -> None:
        self._live()
        self._existing(key)
        self._remove(key)
        self._fanout.emit([Event(EventType.DELETE, self._tombstone(key))])

    async def delete_range(self, start: bytes, end: bytes) -> None:
        self._live()
        first = bisect.bisect_left(self._keys, start)
        last = max(first, bisect.bisect_left(self._keys, end))
        doomed = self._keys[first:last]
        del self._keys[first:last]
        for key in doomed:
            del self._items[key]
        self._fanout.emit([Event(EventType.DELETE, self._tombstone(key)) for key in doomed])

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        if expires.utcoffset() is None:
            raise BadParameter(f"expiry of {show_key(key)} must be timezone-aware")
        self._live()
        # The value and revision stay: only the lease moves, as with an etcd lease keep-alive.
        self._items[key] = dataclasses.replace(self._existing(key), expires=expires)
        heapq.heappush(self._expiries, (expires, key))

    async def watch(self, prefixes: Sequence[bytes], since: str | None = None) -> Watcher:
        self._live()
        return self._fanout.watch(prefixes, since)

    async def close(self) -> None:
        self._closed = True
        self._fanout.close()
