"""Follow a DynamoDB backend's table through its stream and hand the changes out in order.

The stream carries each committed transaction's LOG row (see dynamodb_schema). Rows are handed
out strictly in revision order: one that arrives early (another shard, or a shard that split)
waits for the rows before it. The LOG partition is the truth and the stream only the fast path,
so whenever the feed is behind for REPAIR_AFTER (a record not yet there, an iterator that broke
or stopped delivering, an outage) it syncs: fresh iterators at the stream's end, then the rows it
missed read from the table. Only history really gone (rows past retention, the table deleted or
made again) ends the watchers, with LimitExceeded, so readers re-read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from teleport.backend.base import Event
from teleport.backend.dynamodb_schema import KEY, LOG, PARTITION, LogEntry, decode_log, log_key
from teleport.backend.dynamodb_table import Table, TableMissing
from teleport.errors import ConnectionProblem, LimitExceeded, TeleportError

log = logging.getLogger("teleport.backend.dynamodb")

#: Seconds between reads of the stream when nothing arrives (and no local write wakes it).
POLL_INTERVAL = 1.0
#: Seconds at least between two reads of a shard: DynamoDB allows five a second per shard.
MIN_POLL_GAP = 0.25
#: Seconds the feed may lag a revision it knows is committed before it reads the table instead.
REPAIR_AFTER = 1.0
#: Seconds between reads of the counter that catch a stream that silently stopped delivering.
CHECK_INTERVAL = 5.0
#: Seconds between looks for new shards (DynamoDB rolls them over every few hours).
DISCOVER_INTERVAL = 30.0
#: Seconds a watch waits for the feed to start or to reach the current revision.
WAIT_TIMEOUT = 10.0
#: LOG rows read at once while repairing.
REPAIR_BATCH = 100
_LAST = log_key(10**20 - 1)


class StreamFeed:
    """The one reader of a backend's stream; deliver() gets each transaction's events."""

    def __init__(self, table: Table, deliver: Callable[[Sequence[Event]], None],
                 lost: Callable[[LimitExceeded], None], store: Callable[[str], None]) -> None:
        self._table = table
        self._deliver = deliver
        self._lost = lost
        self._on_store = store
        #: The last revision handed out; None until the first sync (and after history is lost).
        self.rev: int | None = None
        self._store: str | None = None
        self._target = 0
        self._pending: dict[int, LogEntry] = {}
        self._arn = ""
        self._iterators: dict[str, str] = {}
        #: The sequence number of the last record read from each shard.
        self._seen: dict[str, str] = {}
        self._known: set[str] = set()
        self._need_sync = True
        self._rediscover = False
        self._behind_since: float | None = None
        self._last_check = self._last_discover = time.monotonic()
        self._ready = asyncio.Event()
        self._advanced = asyncio.Event()
        self._wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"dynamodb watch {table.name}")

    # --- for the backend -------------------------------------------------------------------

    def expect(self, revision: int) -> None:
        """A revision is committed (a local write, a counter read): read until it is out."""
        self._target = max(self._target, revision)
        self._wake.set()

    async def reach(self, revision: int) -> int:
        """Wait until every change up to revision is handed out; return the feed's revision."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        try:
            async with asyncio.timeout(WAIT_TIMEOUT):
                await self._ready.wait()
        except TimeoutError:
            raise ConnectionProblem(f"{self._table.what}: cannot start watching its stream"
                                    ) from None
        self.expect(revision)
        while self.rev is None or self.rev < revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.task.done():
                raise ConnectionProblem(
                    f"{self._table.what}: the change stream is not keeping up")
            self._advanced.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._advanced.wait()
            except TimeoutError:
                pass
        return self.rev

    # --- following --------------------------------------------------------------------------

    async def _run(self) -> None:
        delay, failing = 0.1, False
        while True:
            try:
                if self._need_sync:
                    await self._sync()
                if failing:
                    log.info("%s: following its stream again from revision %s",
                             self._table.what, self.rev)
                delay, failing = 0.1, False
                await self._follow()
            except Exception as err:
                if isinstance(err, TableMissing) and self.rev is not None:
                    self._lose("the table is gone")
                if not failing:
                    shown = str(err) if isinstance(err, TeleportError) else repr(err)
                    log.warning("%s: watch feed interrupted, retrying: %s",
                                self._table.what, shown)
                failing = True
                # Throttled: the same iterators serve once it passes; else take new ones.
                self._need_sync = self._need_sync or not isinstance(err, LimitExceeded)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _lose(self, reason: str) -> None:
        """End every watcher: events are gone for good. The feed starts again from now."""
        log.warning("%s: %s; watchers re-read", self._table.what, reason)
        self._lost(LimitExceeded(f"{self._table.what}: {reason}; read again and watch again"))
        self.rev, self._target = None, 0
        self._pending.clear()
        self._ready.clear()
        self._need_sync = True

    async def _sync(self) -> None:
        """Start reading at the stream's end, then catch up from the LOG rows."""
        log.debug("%s: syncing its stream from revision %s", self._table.what, self.rev)
        described = (await self._table.acall("describe_table",
                                             TableName=self._table.name))["Table"]
        arn = described.get("LatestStreamArn")
        if not arn:
            raise ConnectionProblem(f"{self._table.what} has no stream")
        shards = await self._shards(arn)
        iterators = {}
        for shard in shards:
            if "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {}):
                iterators[shard["ShardId"]] = await self._iterator(arn, shard["ShardId"], "LATEST")
        self._arn, self._iterators, self._seen = arn, iterators, {}
        self._known = {shard["ShardId"] for shard in shards}
        self._last_discover = time.monotonic()
        await self._catch_up()

    async def _refresh(self) -> None:
        """Take the shards' iterators again from the last records read (an iterator may have
        stopped delivering: moto's do after a cancelled transaction), then catch up."""
        log.debug("%s: catching up from revision %s", self._table.what, self.rev)
        for shard in list(self._iterators):
            seen = self._seen.get(shard)
            self._iterators[shard] = await self._iterator(
                self._arn, shard, "LATEST" if seen is None else "AT_SEQUENCE_NUMBER", seen)
        await self._catch_up()

    async def _catch_up(self) -> None:
        """Read the counter after the iterators are in place (whatever commits later is in the
        stream), then hand out the LOG rows up to it."""
        while True:
            counter = await self._table.run(self._table.read_counter)
            if self.rev is not None and counter.store != self._store:
                self._lose("the table was made again; its history is new")
            if self.rev is None:
                self.rev, self._store = counter.revision, counter.store
                self._on_store(counter.store)
            self._target = max(self._target, counter.revision)
            await self._repair()
            if self.rev is not None:  # else the log was pruned: start again from now
                break
        self._need_sync, self._behind_since = False, None
        self._last_check = time.monotonic()
        self._ready.set()
        self._advanced.set()

    async def _repair(self) -> None:
        """Hand out the LOG rows after rev up to the target, or end the watchers if pruned."""
        while self.rev is not None and self.rev < self._target:
            rows = await self._table.run(self._table.query, LOG, log_key(self.rev + 1), _LAST,
                                         limit=REPAIR_BATCH)
            for row in rows[:REPAIR_BATCH]:
                self._add(decode_log(row))
            before = self.rev
            self._drain()
            if self.rev == before:
                self._lose(f"changes after revision {before} are no longer in its log")
                return

    async def _follow(self) -> None:
        last_round = 0.0
        while True:
            await asyncio.sleep(max(0.0, last_round + MIN_POLL_GAP - time.monotonic()))
            last_round = time.monotonic()
            self._wake.clear()
            got = await self._read_shards()
            self._drain()
            now = time.monotonic()
            if self._rediscover or now - self._last_discover > DISCOVER_INTERVAL:
                await self._discover()
            if now - self._last_check > CHECK_INTERVAL:
                counter = await self._table.run(self._table.read_counter)
                if counter.store != self._store:
                    self._need_sync = True
                    return
                self.expect(counter.revision)
                self._last_check = now
            assert self.rev is not None
            if self._pending or self._target > self.rev:
                if self._behind_since is None:
                    self._behind_since = now
                elif now - self._behind_since > REPAIR_AFTER:
                    await self._refresh()
                continue
            self._behind_since = None
            if not got:
                try:
                    async with asyncio.timeout(POLL_INTERVAL):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _read_shards(self) -> bool:
        got = False
        for shard, iterator in list(self._iterators.items()):
            answer = await self._table.run(self._table.stream_call, "get_records",
                                           ShardIterator=iterator, Limit=1000)
            for record in answer.get("Records", []):
                got = True
                self._seen[shard] = record["dynamodb"]["SequenceNumber"]
                entry = _log_entry(record)
                if entry is not None:
                    self._add(entry)
            following = answer.get("NextShardIterator")
            if following:
                self._iterators[shard] = following
            else:  # the shard is closed and read: its children carry on
                del self._iterators[shard]
                self._rediscover = True
        return got

    async def _discover(self) -> None:
        for shard in await self._shards(self._arn):
            if shard["ShardId"] not in self._known:
                self._known.add(shard["ShardId"])
                self._iterators[shard["ShardId"]] = await self._iterator(
                    self._arn, shard["ShardId"], "TRIM_HORIZON")
        self._rediscover, self._last_discover = False, time.monotonic()

    async def _shards(self, arn: str) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        params: dict[str, Any] = {"StreamArn": arn}
        while True:
            described = (await self._table.run(self._table.stream_call, "describe_stream",
                                               **params))["StreamDescription"]
            shards.extend(described.get("Shards", []))
            after = described.get("LastEvaluatedShardId")
            if not after:
                return shards
            params["ExclusiveStartShardId"] = after

    async def _iterator(self, arn: str, shard: str, kind: str, at: str | None = None) -> str:
        where = {} if at is None else {"SequenceNumber": at}
        answer = await self._table.run(self._table.stream_call, "get_shard_iterator",
                                       StreamArn=arn, ShardId=shard, ShardIteratorType=kind,
                                       **where)
        return str(answer["ShardIterator"])

    def _add(self, entry: LogEntry) -> None:
        # The first row read for a revision wins: a row moto shows for a transaction it then
        # cancelled always comes after the committed one it lost to.
        if self.rev is not None and entry.last > self.rev:
            self._pending.setdefault(entry.prev, entry)

    def _drain(self) -> None:
        """Hand out the pending rows that follow on from rev, in order."""
        while self.rev is not None and self.rev in self._pending:
            entry = self._pending.pop(self.rev)
            self._deliver(entry.events)
            self.rev = entry.last
            self._advanced.set()
        if self.rev is not None:  # read twice, or not committed (moto, see dynamodb.py)
            for prev in [p for p in self._pending if p < self.rev]:
                del self._pending[prev]


def _log_entry(record: dict[str, Any]) -> LogEntry | None:
    """The LOG row a stream record adds, if it adds one."""
    change = record.get("dynamodb", {})
    if record.get("eventName") != "INSERT" or change.get("Keys", {}).get(
            PARTITION, {}).get("S") != LOG or "NewImage" not in change:
        return None
    image = change["NewImage"]
    return decode_log(image) if KEY in image else None
