"""The in-memory backend for tests and caches, and the in-process event fan-out local drivers share.

Expiry follows the injected clock and is applied lazily: every operation first drops the items
whose time has come and tells watchers, so a test moves a FakeClock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from teleport.backend.base import Backend, Event, EventType, Item, Watcher
from teleport.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
)
from teleport.utils.clock import Clock, RealClock

#: Events a watcher may fall behind by before it is closed; the reader then re-reads and re-watches.
WATCH_BUFFER = 1024

_INIT = Event(EventType.INIT, Item(b"", b""))


def check_item(item: Item) -> None:
    """Reject items no driver can store faithfully, before anything is written."""
    if not isinstance(item.key, bytes) or not item.key:
        raise BadParameter(f"backend key must be non-empty bytes, got {item.key!r}")
    if not isinstance(item.value, bytes):
        raise BadParameter(f"value of {show_key(item.key)} must be bytes")
    if item.expires is not None and item.expires.utcoffset() is None:
        raise BadParameter(f"expiry of {show_key(item.key)} must be timezone-aware")


def show_key(key: bytes) -> str:
    """Render a key for an error message without hiding non-UTF-8 bytes."""
    return repr(key.decode(errors="backslashreplace"))


class _QueueWatcher(Watcher):
    """A watcher fed by EventFanout; it ends when closed and fails when its reader lags."""

    def __init__(self, prefixes: Sequence[bytes], fanout: EventFanout, capacity: int) -> None:
        self._prefixes = tuple(bytes(p) for p in prefixes)
        self._fanout = fanout
        self._capacity = capacity
        self._events: deque[Event] = deque([_INIT])
        self._wake = asyncio.Event()
        self._closed = False
        self._error: LimitExceeded | None = None

    def wants(self, key: bytes) -> bool:
        """Match an empty prefix list to every key, so watch([]) follows the whole backend."""
        return not self._prefixes or key.startswith(self._prefixes)

    def push(self, event: Event) -> None:
        """Queue an event, or give up on a reader so far behind that it must re-sync anyway."""
        if len(self._events) >= self._capacity:
            self._error = LimitExceeded(
                f"watcher fell {self._capacity} events behind; read again and watch again")
            self.stop()
            return
        self._events.append(event)
        self._wake.set()

    def stop(self) -> None:
        """End the stream now, dropping undelivered events."""
        self._closed = True
        self._events.clear()
        self._fanout.discard(self)
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            if self._events:
                yield self._events.popleft()
            elif self._closed:
                if self._error is not None:
                    raise self._error
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    async def close(self) -> None:
        self.stop()


class EventFanout:
    """Deliver events to every matching in-process watcher, in the order they were emitted."""

    def __init__(self, capacity: int = WATCH_BUFFER) -> None:
        self._capacity = capacity
        # A dict keeps delivery order across watchers stable; values are unused.
        self._watchers: dict[_QueueWatcher, None] = {}

    def watch(self, prefixes: Sequence[bytes]) -> Watcher:
        """Register a watcher whose stream starts with INIT and then sees every later event."""
        watcher = _QueueWatcher(prefixes, self, self._capacity)
        self._watchers[watcher] = None
        return watcher

    def discard(self, watcher: _QueueWatcher) -> None:
        """Forget a watcher so closed streams cost nothing."""
        self._watchers.pop(watcher, None)

    def emit(self, events: Iterable[Event]) -> None:
        """Hand committed events to watchers; call in commit order."""
        for event in events:
            for watcher in list(self._watchers):
                if watcher.wants(event.item.key):
                    watcher.push(event)

    def close(self) -> None:
        """End every stream, as the backend is going away."""
        for watcher in list(self._watchers):
            watcher.stop()


class MemoryBackend(Backend):
    """Keep items in a sorted list so tests and caches get real range semantics without files."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or RealClock()
        self._keys: list[bytes] = []
        self._items: dict[bytes, Item] = {}
        # (expires, key) min-heap; entries go stale when an item is replaced and are skipped.
        self._expiries: list[tuple[datetime, bytes]] = []
        self._revisions = itertools.count(1)
        self._fanout = EventFanout()
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
                gone.append(Event(EventType.DELETE, Item(key, b"")))
        self._fanout.emit(gone)

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
        self._fanout.emit([Event(EventType.DELETE, Item(key, b""))])

    async def delete_range(self, start: bytes, end: bytes) -> None:
        self._live()
        first = bisect.bisect_left(self._keys, start)
        last = max(first, bisect.bisect_left(self._keys, end))
        doomed = self._keys[first:last]
        del self._keys[first:last]
        for key in doomed:
            del self._items[key]
        self._fanout.emit(Event(EventType.DELETE, Item(key, b"")) for key in doomed)

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        if expires.utcoffset() is None:
            raise BadParameter(f"expiry of {show_key(key)} must be timezone-aware")
        self._live()
        # The value and revision stay: only the lease moves, as with an etcd lease keep-alive.
        self._items[key] = dataclasses.replace(self._existing(key), expires=expires)
        heapq.heappush(self._expiries, (expires, key))

    async def watch(self, prefixes: Sequence[bytes]) -> Watcher:
        self._live()
        return self._fanout.watch(prefixes)

    async def close(self) -> None:
        self._closed = True
        self._fanout.close()
