"""Watch-event fan-out and item checks shared by the drivers that live in this process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence

from teleport.backend.base import Event, EventType, Item, Watcher, revision_number
from teleport.errors import BadParameter, LimitExceeded, TeleportError

#: Events a watcher may fall behind by before it is closed; the reader then re-reads and re-watches.
WATCH_BUFFER = 1024

#: Recent events a driver that resumes watches keeps in memory, for this process's lifetime only.
RESUME_HISTORY = 10_000
#: ... and for this many seconds at most: a watcher away longer reads a snapshot anyway (the
#: proxy's copy retries within seconds), and an idle server should not hold a burst's events
#: (10,000 node records) for good.
RESUME_AGE = 300.0


def init_event(revision: int | None) -> Event:
    """The INIT event, carrying the store's revision the stream starts after ("" if unknown):
    a reader that saw every event up to it can later watch again from there."""
    return Event(EventType.INIT, Item(b"", b"", None, "" if revision is None else str(revision)))


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


class QueuedWatcher(Watcher):
    """The reading end every driver's watcher shares: the prefixes it follows and a bounded
    queue of events, ended by the driver (with an error when history was lost) or by close()."""

    def __init__(self, prefixes: Sequence[bytes], capacity: int) -> None:
        self._prefixes = tuple(bytes(p) for p in prefixes)
        self._capacity = capacity
        self._events: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._done = False
        self._error: TeleportError | None = None

    def wants(self, key: bytes) -> bool:
        """Match an empty prefix list to every key, so watch([]) follows the whole backend."""
        return not self._prefixes or key.startswith(self._prefixes)

    def _queue(self, event: Event) -> None:
        """Queue an event; LimitExceeded when the reader is so far behind it must re-sync."""
        if len(self._events) >= self._capacity:
            raise LimitExceeded(
                f"watcher fell {self._capacity} events behind; read again and watch again")
        self._events.append(event)
        self._wake.set()

    def _end(self, error: TeleportError | None = None, *, drop: bool = False) -> None:
        """End the stream after the queued events, or at once (drop, or an error to raise)."""
        self._done = True
        if error is not None:
            self._error = error
        if drop or self._error is not None:
            self._events.clear()
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            if self._events:
                yield self._events.popleft()
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                self._wake.clear()
                await self._wake.wait()


class _QueueWatcher(QueuedWatcher):
    """A watcher fed by EventFanout; it ends when closed and fails when its reader lags."""

    def __init__(self, prefixes: Sequence[bytes], fanout: EventFanout, capacity: int,
                 init: Event) -> None:
        super().__init__(prefixes, capacity)
        self._fanout = fanout
        self._events.append(init)

    def push(self, event: Event) -> None:
        """Queue an event, or give up on a reader so far behind that it must re-sync anyway."""
        try:
            self._queue(event)
        except LimitExceeded as err:
            self.stop(err)

    def backfill(self, events: Iterable[Event]) -> None:
        """Put earlier events between INIT and the live ones; only before the first read."""
        init = self._events.popleft()
        assert init.type is EventType.INIT
        wanted = [e for e in events if self.wants(e.item.key)]
        if len(self._events) + len(wanted) >= self._capacity:
            raise LimitExceeded(f"more than {self._capacity} events to resume; read again")
        self._events = deque([init, *wanted, *self._events])

    def stop(self, error: TeleportError | None = None) -> None:
        """End the stream now, dropping undelivered events."""
        self._end(error, drop=True)
        self._fanout.discard(self)

    async def close(self) -> None:
        self.stop()


class EventFanout:
    """Deliver events to every matching in-process watcher, in the order they were emitted."""

    def __init__(self, capacity: int = WATCH_BUFFER, history: int = 0, floor: int = 0,
                 max_age: float = RESUME_AGE) -> None:
        """history > 0 keeps that many recent events (all with integer revisions) for resuming,
        none older than max_age seconds (dropped as events arrive, and by prune());
        floor is the store's revision when this process started following it."""
        self._capacity = capacity
        # A dict keeps delivery order across watchers stable; values are unused.
        self._watchers: dict[_QueueWatcher, None] = {}
        #: (revision, event, time.monotonic() when emitted), oldest first.
        self._history: deque[tuple[int, Event, float]] | None = (
            deque() if history > 0 else None)
        self._history_size = history
        self._max_age = max_age
        #: Every event with a revision in (floor, last] is in the history.
        self._floor = self._last = floor
        #: A store_id for a driver whose resumable history is this one: it lives as long as the
        #: process, so a revision from before a restart is not resumed.
        self.history_id = f"process-{secrets.token_hex(8)}"

    def watch(self, prefixes: Sequence[bytes], since: str | None = None,
              start: int | None = None) -> _QueueWatcher:
        """Register a watcher whose stream starts with INIT and then sees every later event; with
        since, INIT is followed by the kept events after that revision, or LimitExceeded is raised
        when this process no longer (or never) had them, so the caller reads a snapshot instead.

        INIT carries start, the store's revision every event emitted so far reached (by default
        the last one kept, when this fanout keeps a history)."""
        if start is None and self._history is not None:
            start = self._last
        watcher = _QueueWatcher(prefixes, self, self._capacity, init_event(start))
        if since is not None:
            if self._history is None:
                raise LimitExceeded("this backend cannot resume a watch; read again and watch")
            after = revision_number(since)
            self.prune()
            if not self._floor <= after <= self._last:
                raise LimitExceeded(f"revision {since!r} is not in this backend's recent history;"
                                    " read again and watch")
            watcher.backfill(e for revision, e, _ in self._history if revision > after)
        self._watchers[watcher] = None
        return watcher

    def discard(self, watcher: _QueueWatcher) -> None:
        """Forget a watcher so closed streams cost nothing."""
        self._watchers.pop(watcher, None)

    def emit(self, events: Iterable[Event]) -> None:
        """Hand committed events to watchers; call in commit order."""
        for event in events:
            if self._history is not None:
                self._remember(event)
            for watcher in list(self._watchers):
                if watcher.wants(event.item.key):
                    watcher.push(event)
        self.prune()

    def _remember(self, event: Event) -> None:
        assert self._history is not None
        revision = int(event.item.revision)
        self._history.append((revision, event, time.monotonic()))
        self._last = max(self._last, revision)
        while len(self._history) > self._history_size:
            self._floor = self._history.popleft()[0]

    def prune(self) -> None:
        """Drop kept events older than max_age; a driver calls this now and then when idle."""
        if self._history is None:
            return
        oldest = time.monotonic() - self._max_age
        while self._history and self._history[0][2] <= oldest:
            self._floor = self._history.popleft()[0]

    def fail(self, error: LimitExceeded) -> None:
        """End every stream with error: the store lost history its readers had not seen yet."""
        for watcher in list(self._watchers):
            watcher.stop(error)

    def close(self) -> None:
        """End every stream, as the backend is going away."""
        for watcher in list(self._watchers):
            watcher.stop()
