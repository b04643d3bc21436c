"""The backend contract every storage driver implements and the conformance suite checks.

Keys are `/`-separated byte paths. Items carry a value, an optional expiry and a revision
that changes on every write. Expired items are invisible to every operation.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from teleport.errors import NotFound
from teleport.utils.clock import Clock, RealClock


@dataclass(frozen=True)
class Item:
    key: bytes
    value: bytes
    expires: datetime | None = None
    #: Set by the backend on every write; ignored on input except by compare_and_swap.
    revision: str = ""


class EventType(enum.Enum):
    INIT = "init"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Event:
    type: EventType
    item: Item


class Watcher(abc.ABC):
    """An ordered stream of events under some prefixes; the first event is INIT.

    Iteration ends when the watcher or its backend is closed. It raises LimitExceeded when
    events are lost for good (the reader fell too far behind, or a shared store no longer has
    the history a reconnecting watcher needs, e.g. etcd compacted it): the reader then re-reads
    and watches again. Never a silent gap.
    """

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[Event]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Backend(abc.ABC):
    """Storage for cluster state. Raise teleport.errors kinds, never driver exceptions."""

    clock: Clock = RealClock()
    #: Names the history this backend's revisions belong to: a revision means something only
    #: to a backend with the same store_id (a shared etcd prefix or PostgreSQL database; for
    #: drivers whose watch history lives in the process, one process's lifetime).
    store_id: str = ""

    @abc.abstractmethod
    async def get(self, key: bytes) -> Item:
        """Return the item or raise NotFound."""

    @abc.abstractmethod
    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        """Return items with start <= key < end in key order; limit 0 means all."""

    @abc.abstractmethod
    async def create(self, item: Item) -> Item:
        """Store a new item or raise AlreadyExists."""

    @abc.abstractmethod
    async def put(self, item: Item) -> Item:
        """Store an item, replacing any existing one."""

    @abc.abstractmethod
    async def update(self, item: Item) -> Item:
        """Replace an existing item or raise NotFound."""

    @abc.abstractmethod
    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        """Replace the item only if its current value equals expected.value.

        Raise NotFound if absent and CompareFailed if the value differs.
        """

    @abc.abstractmethod
    async def delete(self, key: bytes) -> None:
        """Delete an item or raise NotFound."""

    @abc.abstractmethod
    async def delete_range(self, start: bytes, end: bytes) -> None:
        """Delete every item with start <= key < end."""

    @abc.abstractmethod
    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        """Move an existing item's expiry, or raise NotFound. A store that commits in groups
        may hold it back briefly to commit it with others (sqlite: `LEASE_PATIENCE`)."""

    async def keep_alive_all(self, keys: Sequence[bytes], expires: datetime) -> None:
        """Move the expiry of every existing item of keys; NotFound if any was missing.

        One call for what belongs together (a host's record and its name claim): a store with
        group commit queues it as one request, where two calls cost two tasks and two futures
        on the loop for each heartbeat. Here: every key at once, each tried."""
        outcomes = await asyncio.gather(*(self.keep_alive(one, expires) for one in keys),
                                        return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        # Another failure outranks NotFound: the caller must not take it for a gone record.
        failed.sort(key=lambda o: isinstance(o, NotFound))
        if failed:
            raise failed[0]

    @abc.abstractmethod
    async def watch(self, prefixes: Sequence[bytes], since: str | None = None) -> Watcher:
        """Start watching; events for keys under any prefix follow an INIT event.

        With since (a revision this store gave out), INIT is followed by every matching event
        after it, in order, then live ones; when the store no longer has that history (or the
        revision is not its own) this raises LimitExceeded and the caller reads a snapshot."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and files; later calls may fail."""

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def revision_number(revision: str) -> int:
    """Read a revision as the stores hand them out (at most 19 ASCII digits); -1 for anything
    else, which no store has: a cursor from a client is checked with this before any use."""
    if revision.isascii() and revision.isdigit() and len(revision) <= 19:
        return int(revision)
    return -1


def key(*parts: str) -> bytes:
    """Build `/a/b/c` from parts; parts must not contain `/`."""
    return ("/" + "/".join(parts)).encode()


def range_end(prefix: bytes) -> bytes:
    """Return the smallest key greater than every key starting with prefix."""
    buf = bytearray(prefix)
    while buf:
        if buf[-1] < 0xFF:
            buf[-1] += 1
            return bytes(buf)
        buf.pop()
    return b"\xff" * 64
