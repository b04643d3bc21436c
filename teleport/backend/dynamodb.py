"""The DynamoDB backend (`storage.type: dynamodb`): auth servers share one table and its stream.

Writes are serialised through one counter row (see dynamodb_schema): each process commits the
writes queued meanwhile as one transaction that moves the counter on under a condition on its
old value, puts or deletes their items and adds their events to the change log. Conditions
(create, update, compare-and-swap, delete) are checked on a strongly consistent read made
after the counter value the transaction expects: if it still holds at commit nothing changed
in between, and if another auth server committed first the group is read and checked again.
So revisions are integers handed out in commit order, and the stream (dynamodb_feed) gives
every watcher the same order. Keeping conditions out of the transaction has a second reason:
moto, the test server, rolls a cancelled transaction back in a way that loses stream records.

Expiry follows the injected clock: reads hide expired items, and writes purge those this
process knows of (its own writes, every PUT the stream shows, a scan at open), announcing them
as DELETE events; a sweep does it when nothing is written. DynamoDB's TTL (whole seconds, late
by hours or days) only tidies up after us.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from teleport.backend.base import Backend, Event, EventType, Item, Watcher, revision_number
from teleport.backend.dynamodb_feed import StreamFeed
from teleport.backend.dynamodb_schema import (
    COUNTER_KEY,
    DATA,
    EXPIRES_US,
    KEY,
    LOG,
    MAX_KEY_BYTES,
    META,
    REVISION,
    SERIAL,
    STORE,
    check_size,
    decode_item,
    decode_key,
    decode_log,
    encode_key,
    item_row,
    log_key,
    log_row,
    row_key,
    to_us,
    truncated,
)
from teleport.backend.dynamodb_table import Cancelled, DynamoSettings, Table
from teleport.backend.fanout import WATCH_BUFFER, EventFanout, check_item, show_key
from teleport.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
    TeleportError,
)
from teleport.utils.clock import Clock, RealClock

__all__ = ["DynamoBackend", "DynamoSettings"]

log = logging.getLogger("teleport.backend.dynamodb")

#: Seconds of real time between looks for expired items when nothing else is written.
PURGE_INTERVAL = 1.0
#: Seconds a write keeps retrying while other auth servers win the counter.
RETRY_SECONDS = 10.0
#: Items one transaction writes at most (DynamoDB allows 100 actions; two are ours).
MAX_GROUP = 98
#: Bytes of keys and values one transaction carries at most: its log row must stay < 400 KB.
GROUP_BYTES = 300_000
#: Change log rows a resumed watch replays at most (each holds at least one event, and a
#: watcher takes WATCH_BUFFER) before it is told to re-read instead.
MAX_REPLAY = WATCH_BUFFER
#: Above every key DynamoDB accepts (MAX_KEY_BYTES of UTF-8, two bytes per U+00FF).
_HIGHEST = "\xff" * (MAX_KEY_BYTES // 2)
_RETRIED = frozenset({"ConditionalCheckFailed", "TransactionConflict", "ThrottlingError",
                      "ProvisionedThroughputExceeded", "RequestLimitExceeded"})


@dataclass(eq=False)
class _Op:
    """A queued write; kind is create, put, update, swap, delete, clear or keep_alive."""

    kind: str
    key: bytes
    item: Item | None = None
    expected: Item | None = None
    expires: datetime | None = None
    done: asyncio.Future[Item | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class DynamoBackend(Backend):
    """Keep cluster state in a DynamoDB table; open it with DynamoBackend.open()."""

    def __init__(self, table: Table, clock: Clock, serial: int, revision: int, store: str) -> None:
        self.table = table
        self.clock = clock
        self.store_id = f"dynamodb-{store}"
        #: The counter as this process last committed or read it; None: read it again.
        self._serial: int | None = serial
        self._rev = revision
        self._store_name = store
        self._closed = False
        self._fanout = EventFanout()
        self._queue: deque[_Op] = deque()
        self._writer: asyncio.Task[None] | None = None
        #: (expiry in microseconds, key) of items that may expire; stale entries are skipped.
        self._expiries: list[tuple[int, bytes]] = []
        self._purge_after = 0.0
        self._feed = StreamFeed(table, self._deliver, self._fanout.fail, self._set_store)
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_forever(), name=f"dynamodb sweep {table.name}")

    @classmethod
    async def open(cls, settings: DynamoSettings, clock: Clock | None = None) -> DynamoBackend:
        """Connect, make the table if missing, and start following its stream."""
        table = await Table.connect(settings)
        try:
            await table.ensure()
            counter = await table.run(table.read_counter)
            # Items that expire later, so that this process announces them even if the one
            # that wrote them is gone.
            rows = await table.run(lambda: table.query(
                DATA, "\x00", _HIGHEST, projection=f"#{KEY}, #{EXPIRES_US}"))
        except BaseException:
            await asyncio.to_thread(table.close)
            raise
        backend = cls(table, clock or RealClock(), counter.serial, counter.revision, counter.store)
        for row in rows:
            if EXPIRES_US in row:
                backend._expiries.append((int(row[EXPIRES_US]["N"]), decode_key(row[KEY]["S"])))
        heapq.heapify(backend._expiries)
        return backend

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionProblem(f"{self.table.what}: the backend is closed")

    def _set_store(self, store: str) -> None:
        self.store_id = f"dynamodb-{store}"

    def _deliver(self, events: Sequence[Event]) -> None:
        """Hand committed events to watchers; learn the expiries other auth servers wrote."""
        self._fanout.emit(events)
        for event in events:
            if event.type is EventType.PUT and event.item.expires is not None:
                heapq.heappush(self._expiries, (to_us(event.item.expires), event.item.key))

    # --- reads ---------------------------------------------------------------------------------

    async def get(self, key: bytes) -> Item:
        self._check_open()
        if not key:
            raise NotFound("key '' not found")
        answer = await self.table.acall("get_item", TableName=self.table.name,
                                        Key=row_key(DATA, encode_key(key)), ConsistentRead=True)
        row = answer.get("Item")
        item = None if row is None else decode_item(row)
        if item is None or (item.expires is not None and item.expires <= self.clock.now()):
            raise NotFound(f"key {show_key(key)} not found")
        return item

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        if limit < 0:
            raise BadParameter(f"range limit must not be negative, got {limit}")
        self._check_open()
        if start >= end:
            return []
        low, high = _bounds(start, end)
        rows = await self.table.run(lambda: self.table.query(
            DATA, low, high, limit=limit, live_after=to_us(self.clock.now())))
        items = [decode_item(row) for row in rows if _in_range(row, start, end)]
        return items[:limit] if limit else items

    # --- writes --------------------------------------------------------------------------------

    async def create(self, item: Item) -> Item:
        return await self._store("create", item)

    async def put(self, item: Item) -> Item:
        return await self._store("put", item)

    async def update(self, item: Item) -> Item:
        return await self._store("update", item)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        if expected.key != replace.key:
            raise BadParameter(
                f"compare_and_swap keys differ: {show_key(expected.key)} and {show_key(replace.key)}")
        return await self._store("swap", replace, expected)

    async def _store(self, kind: str, item: Item, expected: Item | None = None) -> Item:
        check_item(item)
        check_size(item)
        stored = await self._submit(_Op(kind, item.key, item, expected))
        assert stored is not None
        return stored

    async def delete(self, key: bytes) -> None:
        await self._submit(_Op("delete", key))

    async def delete_range(self, start: bytes, end: bytes) -> None:
        """Delete what the range holds now, each key a write of its own (not atomic)."""
        self._check_open()
        if start >= end:
            return
        low, high = _bounds(start, end)
        rows = await self.table.run(lambda: self.table.query(DATA, low, high,
                                                             projection=f"#{KEY}"))
        ops = [_Op("clear", decode_key(row[KEY]["S"])) for row in rows
               if _in_range(row, start, end)]
        await asyncio.gather(*(asyncio.shield(self._enqueue(op)) for op in ops))

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        if expires.utcoffset() is None:
            raise BadParameter(f"expiry of {show_key(key)} must be timezone-aware")
        await self._submit(_Op("keep_alive", key, expires=expires))

    async def _submit(self, op: _Op) -> Item | None:
        # A cancelled caller cannot undo a commit in flight: the future is shielded.
        return await asyncio.shield(self._enqueue(op))

    def _enqueue(self, op: _Op) -> asyncio.Future[Item | None]:
        self._check_open()
        if not op.key:
            raise BadParameter("backend key must be non-empty bytes, got b''")
        self._queue.append(op)
        self._kick()
        return op.done

    def _kick(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queued(), name=f"dynamodb writer {self.table.name}")

    def _due(self) -> bool:
        return bool(self._expiries) and self._expiries[0][0] <= to_us(self.clock.now()) \
            and time.monotonic() >= self._purge_after

    async def _write_queued(self) -> None:
        """Commit queued writes (and due expiries) a group at a time until none is left."""
        while self._queue or self._due():
            group, purge = self._take_group()
            try:
                await self._commit(group, purge)
            except BaseException as err:
                failed = err if isinstance(err, Exception) else ConnectionProblem(
                    f"{self.table.what}: the backend is closed")
                for op in group:
                    if not op.done.done():
                        op.done.set_exception(failed)
                for entry in purge:
                    heapq.heappush(self._expiries, entry)
                if not isinstance(err, Exception):
                    raise
                if not group:  # only purging: the sweep tries again in a while
                    log.warning("%s: could not delete expired items: %s", self.table.what, err)
                    self._purge_after = time.monotonic() + 5 * PURGE_INTERVAL

    def _take_group(self) -> tuple[list[_Op], list[tuple[int, bytes]]]:
        """The next writes to commit together (distinct keys) and the due expiries."""
        group: list[_Op] = []
        keys: set[bytes] = set()
        size = 0
        while self._queue and len(group) < MAX_GROUP:
            op = self._queue[0]
            weight = len(op.key) + (len(op.item.value) if op.item is not None else 0) + 64
            if op.key in keys or (group and size + weight > GROUP_BYTES):
                break
            group.append(self._queue.popleft())
            keys.add(op.key)
            size += weight
        purge: list[tuple[int, bytes]] = []
        if time.monotonic() >= self._purge_after:
            now = to_us(self.clock.now())
            while self._expiries and self._expiries[0][0] <= now and len(keys) < MAX_GROUP \
                    and size + len(self._expiries[0][1]) + 64 <= GROUP_BYTES:
                purge.append(heapq.heappop(self._expiries))
                if purge[-1][1] not in keys:
                    keys.add(purge[-1][1])
                    size += len(purge[-1][1]) + 64
        return group, purge

    async def _commit(self, group: list[_Op], purge: list[tuple[int, bytes]]) -> None:
        """Read, check and commit one group, again while other auth servers win the counter."""
        purged = {key for _, key in purge}
        reads = sorted({op.key for op in group if op.kind != "put"} | purged)
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.02
        while True:
            if self._serial is None:
                counter = await self.table.run(self.table.read_counter)
                self._serial, self._rev, self._store_name = counter.serial, counter.revision, \
                    counter.store
            serial = self._serial
            rows = await self.table.run(self._read, reads) if reads else {}
            plan = _Plan(self, group, purged, rows)
            if not plan.actions:
                self._remember(plan)
                return
            try:
                await self.table.run(self.table.call, "transact_write_items",
                                     TransactItems=plan.transaction(serial, self._store_name))
            except Cancelled as err:
                self._serial = None
                if not set(err.codes) <= _RETRIED | {"None"}:
                    raise BadParameter(f"{self.table.what} refused a write: {err}") from None
                if time.monotonic() > deadline:
                    raise ConnectionProblem(f"{self.table.what}: writes kept losing to other "
                                            f"writers for {RETRY_SECONDS:g}s ({err})") from None
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
                continue
            except BaseException:
                self._serial = None  # perhaps committed: read the counter again
                raise
            self._serial, self._rev = serial + 1, plan.revision
            if plan.events:
                self._feed.expect(plan.revision)
            self._remember(plan)
            return

    def _remember(self, plan: _Plan) -> None:
        """Keep the expiries a settled group wrote or found, and answer its writers."""
        for entry in plan.expiries:
            heapq.heappush(self._expiries, entry)
        plan.settle()

    def _read(self, keys: list[bytes]) -> dict[bytes, Item]:
        """The stored items of keys, strongly consistent (blocking)."""
        found: dict[bytes, Item] = {}
        for first in range(0, len(keys), 100):
            rows = self.table.batch_get([row_key(DATA, encode_key(k))
                                         for k in keys[first:first + 100]])
            found.update((item.key, item) for item in map(decode_item, rows))
        return found

    # --- watching ------------------------------------------------------------------------------

    async def watch(self, prefixes: Sequence[bytes], since: str | None = None) -> Watcher:
        """Start after every write committed before this call; with since, first replay the
        logged changes after it (LimitExceeded when they are gone or not this table's)."""
        self._check_open()
        counter = await self.table.run(self.table.read_counter)
        last = await self._feed.reach(counter.revision)
        # No await between reach() and registration: the stream starts exactly at last.
        watcher = self._fanout.watch(prefixes, start=last)
        if since is None:
            return watcher
        try:
            watcher.backfill(await self._replay(since, last))
        except BaseException:
            watcher.stop()
            raise
        return watcher

    async def _replay(self, since: str, last: int) -> list[Event]:
        """The changes in (since, last], all of them, or LimitExceeded so the caller re-reads."""
        start = revision_number(since)
        if not 0 <= start <= last:
            raise LimitExceeded(f"revision {since!r} is not in {self.table.what}'s history;"
                                " read again")
        if start == last:
            return []
        rows = await self.table.run(lambda: self.table.query(
            LOG, log_key(start + 1), log_key(last), limit=MAX_REPLAY))
        if len(rows) > MAX_REPLAY:
            raise LimitExceeded(f"more than {MAX_REPLAY} changes to replay; read again")
        entries = [decode_log(row) for row in rows]
        if not entries or entries[0].prev > start or entries[-1].last != last or any(
                a.last != b.prev for a, b in zip(entries, entries[1:], strict=False)):
            raise LimitExceeded(f"changes after revision {start} are no longer in "
                                f"{self.table.what}'s log; read again")
        return [e for entry in entries for e in entry.events if int(e.item.revision) > start]

    # --- lifecycle -----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        """Announce expiries when nothing else is written."""
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            if self._due():
                self._kick()

    async def close(self) -> None:
        """Stop the sweep and the feed, finish the group in flight, end watchers."""
        if self._closed:
            return
        self._closed = True
        tasks = [self._sweeper, self._feed.task]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        if self._writer is not None:
            await asyncio.wait([self._writer])
        self._fanout.close()
        await asyncio.to_thread(self.table.close)


def _bounds(start: bytes, end: bytes) -> tuple[str, str]:
    """An inclusive key range DynamoDB accepts that holds start <= key < end: a bound longer
    than any key is shortened, so the caller keeps only the rows in_range()."""
    low, high = encode_key(start)[:MAX_KEY_BYTES // 2] or "\x00", encode_key(end)
    if len(high.encode()) > MAX_KEY_BYTES or high > _HIGHEST:
        high = _HIGHEST
    return low, high


def _in_range(row: dict[str, Any], start: bytes, end: bytes) -> bool:
    return encode_key(start) <= row[KEY]["S"] < encode_key(end)


class _Plan:
    """One group's outcome as of its read: actions, events with their revisions, results."""

    def __init__(self, backend: DynamoBackend, group: list[_Op], purged: set[bytes],
                 rows: dict[bytes, Item]) -> None:
        self._table = backend.table
        self._prev = backend._rev
        self.revision = backend._rev
        self.events: list[Event] = []
        self.actions: dict[bytes, dict[str, Any]] = {}
        self.expiries: list[tuple[int, bytes]] = []
        self._results: list[tuple[_Op, Item | None | TeleportError]] = []
        now = backend.clock.now()
        current: dict[bytes, Item | None] = dict(rows)
        for key in sorted(set(rows) | purged):
            item = rows.get(key)
            if item is not None and item.expires is not None and item.expires <= now:
                self._delete(key)
                current[key] = None
            elif key in purged and item is not None and item.expires is not None:
                self.expiries.append((to_us(item.expires), key))  # kept alive meanwhile
        for op in group:
            try:
                self._results.append((op, self._apply(op, current.get(op.key))))
            except TeleportError as err:
                self._results.append((op, err))

    def _apply(self, op: _Op, current: Item | None) -> Item | None:
        if op.kind == "clear" and current is None:
            return None
        if op.kind == "create" and current is not None:
            raise AlreadyExists(f"key {show_key(op.key)} already exists")
        if op.kind not in ("put", "create") and current is None:
            raise NotFound(f"key {show_key(op.key)} not found")
        if op.kind == "swap":
            assert op.expected is not None and current is not None
            if current.value != op.expected.value or (
                    op.expected.revision and op.expected.revision != current.revision):
                raise CompareFailed(f"key {show_key(op.key)} has changed")
        if op.kind in ("delete", "clear"):
            self._delete(op.key)
            return None
        if op.kind == "keep_alive":
            # Only the expiry moves: no revision, no event, as with an etcd lease.
            assert current is not None
            self._put(dataclasses.replace(current, expires=truncated(op.expires)))
            return None
        assert op.item is not None
        self.revision += 1
        stored = dataclasses.replace(op.item, expires=truncated(op.item.expires),
                                     revision=str(self.revision))
        self._put(stored)
        self.events.append(Event(EventType.PUT, stored))
        return stored

    def _put(self, item: Item) -> None:
        self.actions[item.key] = {"Put": {"TableName": self._table.name, "Item": item_row(item)}}
        if item.expires is not None:
            self.expiries.append((to_us(item.expires), item.key))

    def _delete(self, key: bytes) -> None:
        self.revision += 1
        self.events.append(Event(EventType.DELETE, Item(key, b"", None, str(self.revision))))
        self.actions[key] = {"Delete": {"TableName": self._table.name,
                                        "Key": row_key(DATA, encode_key(key))}}

    def transaction(self, serial: int, store: str) -> list[dict[str, Any]]:
        """The items' actions, the log row, and last the counter (see the module docstring)."""
        name = self._table.name
        items = list(self.actions.values())
        if self.events:
            items.append({"Put": {"TableName": name, "Item": log_row(self._prev, self.events),
                                  "ConditionExpression": "attribute_not_exists(#key)",
                                  "ExpressionAttributeNames": {"#key": KEY}}})
        items.append({"Update": {
            "TableName": name, "Key": row_key(META, COUNTER_KEY),
            "UpdateExpression": "SET #serial = :next, #revision = :revision",
            # The store too: a table made again may reach the same serial.
            "ConditionExpression": "#serial = :serial AND #store = :store",
            "ExpressionAttributeNames": {"#serial": SERIAL, "#revision": REVISION,
                                         "#store": STORE},
            "ExpressionAttributeValues": {":serial": {"N": str(serial)}, ":store": {"S": store},
                                          ":next": {"N": str(serial + 1)},
                                          ":revision": {"N": str(self.revision)}}}})
        return items

    def settle(self) -> None:
        for op, result in self._results:
            if op.done.done():
                continue
            if isinstance(result, TeleportError):
                op.done.set_exception(result)
            else:
                op.done.set_result(result)
