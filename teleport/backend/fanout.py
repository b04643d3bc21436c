"""Watch-event fan-out and item checks shared by the drivers that live in this process."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence

from teleport.backend.base import Event, EventType, Item, Watcher
from teleport.errors import BadParameter, LimitExceeded

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

    def fail(self, error: LimitExceeded) -> None:
        """End every stream with error: the store lost history its readers had not seen yet."""
        for watcher in list(self._watchers):
            watcher._error = error
            watcher.stop()

    def close(self) -> None:
        """End every stream, as the backend is going away."""
        for watcher in list(self._watchers):
            watcher.stop()
