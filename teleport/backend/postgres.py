"""The PostgreSQL backend: several auth servers share one database and watch each other's writes.

Every write is one transaction that first locks the revision counter row, so writers are
serialised and their revisions commit in order without gaps. The same transaction records its
events in the `changes` table. Each backend follows that table from one dedicated connection:
LISTEN/NOTIFY only wakes it up (a slow poll is the backstop), the rows are the truth, so after a
lost connection it resumes from the last revision it delivered. Changes are kept for
CHANGE_RETENTION; a feed that fell further behind ends its watchers with LimitExceeded and the
readers re-read. Expiry follows the injected clock, as in sqlite: reads hide expired rows, writes
and a periodic sweep delete them and announce DELETE events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import asyncpg

from teleport.backend.base import Backend, Event, EventType, Item, Watcher, revision_number
from teleport.backend.fanout import EventFanout, check_item, show_key
from teleport.backend.groupcommit import GroupCommitter
from teleport.backend.postgres_conn import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    RETRYABLE,
    Target,
    map_error,
    open_pool,
    parse_conn_string,
)
from teleport.backend.postgres_schema import (
    CHANGED,
    CHANNEL,
    EXISTS,
    MIGRATIONS,
    MISSING,
    PUT,
    REFUSED_BY,
    SCHEMA_VERSION,
)
from teleport.errors import (
    AlreadyExists,
    BadParameter,
    CompareFailed,
    ConnectionProblem,
    LimitExceeded,
    NotFound,
    TeleportError,
)
from teleport.metrics import BACKEND_COMMITS, BACKEND_LATENCY
from teleport.utils.clock import Clock, RealClock

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds of real time between sweeps that announce expiries when nothing else is written.
PURGE_INTERVAL = 1.0
#: How long change rows are kept for watchers that lost their connection.
CHANGE_RETENTION = timedelta(minutes=10)
#: Seconds between prunes of old change rows.
PRUNE_INTERVAL = 30.0
#: Seconds between reads of the change table when no notification arrives (a backstop).
POLL_INTERVAL = 2.0
#: Seconds a call keeps retrying a lost connection before it raises ConnectionProblem.
RETRY_SECONDS = 5.0
#: Change rows read per query by a watch feed.
FEED_BATCH = 1000
#: pg_advisory_xact_lock key that serialises schema migrations of one database.
_MIGRATION_LOCK = 0x7E1E9087

_COLUMNS = "key, value, expires, revision"
_LIVE = "(expires IS NULL OR expires > $%d)"
_COUNTER = "SELECT value FROM meta WHERE name = 'revision'"
_CHANGE_COLUMNS = "revision, type, key, value, expires"
_PRUNE = (
    "DELETE FROM changes WHERE revision <= (SELECT max(revision) FROM changes"
    " WHERE created < now() - $1::interval)")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _to_us(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _MICROSECOND


def _change_event(row: asyncpg.Record) -> Event:
    """The watch event of a `changes` row read with _CHANGE_COLUMNS."""
    revision, kind, key, value, expires = row
    if kind == PUT:
        return Event(EventType.PUT, Item(bytes(key), bytes(value), _from_us(expires),
                                         str(revision)))
    return Event(EventType.DELETE, Item(bytes(key), b"", None, str(revision)))


def _row_item(row: Any) -> Item:
    return Item(bytes(row[0]), bytes(row[1]), _from_us(row[2]), str(row[3]))


class _CommitUnknown(Exception):
    """The connection broke while COMMIT was in flight: the write may or may not be applied."""


_WRITE = "SELECT teleport_try_write($1, $2, $3, $4, $5, $6, $7, $8)"
#: What teleport_try_write's refusals mean.
_REFUSED = {REFUSED_BY[EXISTS]: (AlreadyExists, "already exists"),
            REFUSED_BY[MISSING]: (NotFound, "not found"),
            REFUSED_BY[CHANGED]: (CompareFailed, "has changed")}
#: Writes committed together at most: a group holds the revision row lock while it runs.
MAX_GROUP = 256


# --- the backend ------------------------------------------------------------------------------


class PostgresBackend(Backend):
    """Keep cluster state in a PostgreSQL database; open it with PostgresBackend.open()."""

    def __init__(self, target: Target, clock: Clock, pool: asyncpg.Pool) -> None:
        self.target = target
        self.clock = clock
        self._pool = pool
        self._fanout = EventFanout()
        self._closed = False
        self._feed: _Feed | None = None
        self._committer: GroupCommitter[tuple[Any, ...], int] = GroupCommitter(
            self._commit_group, name=f"postgres writer {target.address}", max_group=MAX_GROUP,
            closed=lambda: ConnectionProblem(f"postgres backend at {target.address} is closed"))
        self._sweeper = asyncio.get_running_loop().create_task(
            self._sweep_forever(), name=f"postgres sweep {target.address}")

    @classmethod
    async def open(cls, conn_string: str, clock: Clock | None = None) -> PostgresBackend:
        """Connect, create or check the schema, and start the expiry sweep."""
        target = parse_conn_string(conn_string)
        pool = await open_pool(target)
        try:
            async with pool.acquire() as conn:
                await _migrate(target, conn)
                store = await conn.fetchval("SELECT value FROM meta WHERE name = 'store'")
        except BaseException as err:
            pool.terminate()
            if isinstance(err, Exception) and not isinstance(err, TeleportError):
                raise map_error(target, err) from None
            raise
        backend = cls(target, clock or RealClock(), pool)
        backend.store_id = f"postgres-{store}"
        return backend

    def _now(self) -> int:
        return _to_us(self.clock.now())

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionProblem(f"postgres backend at {self.target.address} is closed")

    async def _run(self, name: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run fn on a pooled connection, retrying lost connections for RETRY_SECONDS."""
        self._check_open()
        started = time.perf_counter()
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.05
        try:
            while True:
                try:
                    async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                        return await fn(conn)
                except TeleportError:
                    raise
                except _CommitUnknown as err:
                    cause = err.__cause__ or err
                    raise ConnectionProblem(
                        f"postgres at {self.target.address} was lost while committing;"
                        f" the write may or may not be stored: "
                        f"{self.target.scrub(str(cause))}") from None
                except RETRYABLE as err:
                    if self._closed or time.monotonic() + delay > deadline:
                        raise map_error(self.target, err) from None
                    log.debug("postgres %s failed, retrying: %s", name,
                              self.target.scrub(str(err)))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                except Exception as err:
                    raise map_error(self.target, err) from None
        finally:
            BACKEND_LATENCY.labels(name).observe(time.perf_counter() - started)

    async def _write(self, op: str, key: bytes, *, end: bytes | None = None,
                     item: Item | None = None, expires: datetime | None = None,
                     expected: Item | None = None) -> int:
        """Queue a teleport_write for the next group commit; return the last revision it used
        (0: none), or raise what refused it.

        Writes that arrive while a group is being committed go together in the next one: one
        transaction, one WAL flush, the revision row locked once. BEGIN and COMMIT are separate
        round trips so that a connection lost before COMMIT is retried safely (the whole
        group), while one lost during COMMIT is reported as unknown, never retried.
        """
        self._check_open()
        value = item.value if item is not None else None
        if item is not None:
            expires = item.expires
        want_value = want_revision = None
        if expected is not None:
            want_value = expected.value
            if expected.revision:
                want_revision = int(expected.revision) if expected.revision.isdigit() else -1
        args = (op, self._now(), key, end, value, None if expires is None else _to_us(expires),
                want_value, want_revision)
        revision = await self._committer.submit(args)
        if revision < 0:
            kind, what = _REFUSED[revision]
            raise kind(f"key {show_key(key)} {what}")
        return revision

    async def _commit_group(self, group: list[tuple[Any, ...]]) -> list[int]:
        revisions = await self._run("write", functools.partial(self._commit, group=group))
        BACKEND_COMMITS.labels("postgres").inc()
        return revisions

    async def _commit(self, conn: asyncpg.Connection, *, group: list[tuple[Any, ...]]
                      ) -> list[int]:
        tx = conn.transaction()
        await tx.start()
        try:
            revisions: list[int] = [await conn.fetchval(_WRITE, *args) for args in group]
        except BaseException:
            if not conn.is_closed():
                await tx.rollback()
            raise
        try:
            await tx.commit()
        except Exception as err:
            raise _CommitUnknown() from err
        if any(r > 0 for r in revisions) and self._feed is not None:
            self._feed.wake()
        return revisions

    async def _store(self, op: str, item: Item, expected: Item | None = None) -> Item:
        revision = await self._write(op, item.key, item=item, expected=expected)
        expires = None if item.expires is None else _from_us(_to_us(item.expires))
        return dataclasses.replace(item, expires=expires, revision=str(revision))

    # --- the Backend interface -----------------------------------------------------------------

    async def get(self, key: bytes) -> Item:
        now = self._now()
        row = await self._run("get", lambda conn: conn.fetchrow(
            f"SELECT {_COLUMNS} FROM kv WHERE key = $1 AND {_LIVE % 2}", key, now))
        if row is None:
            raise NotFound(f"key {show_key(key)} not found")
        return _row_item(row)

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        if limit < 0:
            raise BadParameter(f"range limit must not be negative, got {limit}")
        now = self._now()
        rows = await self._run("get_range", lambda conn: conn.fetch(
            f"SELECT {_COLUMNS} FROM kv WHERE key >= $1 AND key < $2 AND {_LIVE % 3}"
            " ORDER BY key LIMIT $4", start, end, now, limit or None))
        return [_row_item(row) for row in rows]

    async def create(self, item: Item) -> Item:
        check_item(item)
        return await self._store("create", item)

    async def put(self, item: Item) -> Item:
        check_item(item)
        return await self._store("put", item)

    async def update(self, item: Item) -> Item:
        check_item(item)
        return await self._store("update", item)

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter(
                f"compare_and_swap keys differ: {show_key(expected.key)} and {show_key(replace.key)}")
        return await self._store("swap", replace, expected)

    async def delete(self, key: bytes) -> None:
        await self._write("delete", key)

    async def delete_range(self, start: bytes, end: bytes) -> None:
        await self._write("delete_range", start, end=end)

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        if expires.utcoffset() is None:
            raise BadParameter(f"expiry of {show_key(key)} must be timezone-aware")
        await self._write("keep_alive", key, expires=expires)

    async def watch(self, prefixes: Sequence[bytes], since: str | None = None) -> Watcher:
        """Start after every write that finished before this call, once the feed is listening;
        with since, first replay the kept changes after it (LimitExceeded if pruned or unknown)."""
        self._check_open()
        if self._feed is None:
            self._feed = _Feed(self)
        feed = self._feed
        await feed.listening()
        current = await self._run("watch", lambda conn: conn.fetchval(_COUNTER))
        await feed.reach(current)
        # No await between reach() and registration: the stream starts exactly at feed.last.
        last = feed.last
        watcher = self._fanout.watch(prefixes, start=last)
        if since is None:
            return watcher
        try:
            watcher.backfill(await self._replay(since, last or 0))
        except BaseException:
            watcher.stop()
            raise
        return watcher

    async def _replay(self, since: str, last: int) -> list[Event]:
        """The changes in (since, last], all of them, or LimitExceeded so the caller re-reads."""
        start = revision_number(since)
        if not 0 <= start <= last:
            raise LimitExceeded(f"revision {since!r} is not this database's; read again")
        rows = await self._run("watch", lambda conn: conn.fetch(
            f"SELECT {_CHANGE_COLUMNS} FROM changes"
            " WHERE revision > $1 AND revision <= $2 ORDER BY revision", start, last))
        if len(rows) != last - start:
            raise LimitExceeded(f"changes after revision {start} were pruned; read again")
        return [_change_event(row) for row in rows]

    async def prune_changes(self, keep: timedelta = CHANGE_RETENTION) -> None:
        """Drop change rows older than keep; feeds behind them will end their watchers."""
        await self._run("prune_changes", lambda conn: conn.execute(_PRUNE, keep))

    @staticmethod
    def _expired_query(now: int) -> Callable[[asyncpg.Connection], Awaitable[Any]]:
        return lambda conn: conn.fetchval("SELECT 1 FROM kv WHERE expires <= $1 LIMIT 1", now)

    async def _sweep_forever(self) -> None:
        """Announce expiries when nothing else is written and prune old changes."""
        failing = False
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                if await self._run("sweep", self._expired_query(self._now())):
                    await self._write("purge", b"")
                if time.monotonic() - last_prune >= PRUNE_INTERVAL:
                    await self.prune_changes()
                    last_prune = time.monotonic()
            except TeleportError as err:
                if not failing:
                    log.warning("could not purge expired items: %s", err)
                failing = True
            else:
                if failing:
                    log.info("postgres at %s: purging expired items again", self.target.address)
                failing = False

    async def close(self) -> None:
        """Stop the sweep and the feed, end watchers, then close the connections."""
        if self._closed:
            return
        self._closed = True
        tasks = [self._sweeper]
        if self._feed is not None:
            tasks.append(self._feed.task)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        await self._committer.wait()  # the group in flight finishes; queued ones are refused
        self._fanout.close()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._pool.close()
        except Exception:
            self._pool.terminate()


async def _migrate(target: Target, conn: asyncpg.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION; one open at a time per database (an advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        version = await conn.fetchval("SELECT max(version) FROM schema_migrations") or 0
        if version > SCHEMA_VERSION:
            raise BadParameter(
                f"postgres database {target.database!r} at {target.address} has schema version"
                f" {version}, this teleport understands up to {SCHEMA_VERSION};"
                " use a matching teleport version")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", step)
            log.info("postgres database %r at %s: schema migrated to version %d",
                     target.database, target.address, step)


# --- watching ---------------------------------------------------------------------------------


class _Feed:
    """Follow the changes table from one connection and hand events to the backend's watchers."""

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend
        self._target = backend.target
        self._fanout = backend._fanout
        #: The last revision handed to watchers; None until the first connection.
        self.last: int | None = None
        self._wake = asyncio.Event()
        self._listening = asyncio.Event()
        self._advanced = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(
            self._follow_forever(), name=f"postgres watch {self._target.address}")

    def wake(self) -> None:
        """Read the change table now (a notification, a local write or a waiting watch)."""
        self._wake.set()

    async def listening(self) -> None:
        """Wait until LISTEN is in place, or raise ConnectionProblem."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT + RETRY_SECONDS):
                await self._listening.wait()
        except TimeoutError:
            raise ConnectionProblem(
                f"postgres at {self._target.address} is unreachable: cannot start watching"
            ) from None

    async def reach(self, revision: int) -> None:
        """Wait until every change up to revision has been handed out."""
        deadline = time.monotonic() + CONNECT_TIMEOUT + RETRY_SECONDS
        while self.last is None or self.last < revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.task.done():
                raise ConnectionProblem(
                    f"postgres at {self._target.address}: the change feed is not keeping up")
            self._advanced.clear()
            self.wake()
            try:
                async with asyncio.timeout(remaining):
                    await self._advanced.wait()
            except TimeoutError:
                pass

    async def _follow_forever(self) -> None:
        delay = 0.1
        lost = False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._target.dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT,
                    server_settings={"application_name": "teleport-watch"})
                await conn.add_listener(CHANNEL, self._notified)
                conn.add_termination_listener(self._terminated)
                if self.last is None:
                    self.last = await conn.fetchval(_COUNTER)
                    self._advanced.set()
                self._listening.set()
                if lost:
                    log.info("postgres at %s: watching again from revision %s",
                             self._target.address, self.last)
                lost, delay = False, 0.1
                while True:
                    self._wake.clear()
                    while await self._read(conn):
                        pass
                    if conn.is_closed():
                        raise ConnectionResetError("connection closed")
                    try:
                        async with asyncio.timeout(POLL_INTERVAL):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
            except Exception as err:
                if not lost:
                    log.warning("postgres watch feed lost, reconnecting: %s",
                                map_error(self._target, err))
                lost = True
            finally:
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _notified(self, *args: object) -> None:
        self._wake.set()

    def _terminated(self, *args: object) -> None:
        self._wake.set()

    async def _read(self, conn: asyncpg.Connection) -> bool:
        """Hand out the next batch of changes; return whether more may be waiting."""
        assert self.last is not None
        counter = await conn.fetchval(_COUNTER)
        rows = await conn.fetch(
            f"SELECT {_CHANGE_COLUMNS} FROM changes WHERE revision > $1"
            " ORDER BY revision LIMIT $2", self.last, FEED_BATCH)
        expected = self.last + 1
        if (rows and rows[0][0] != expected) or (not rows and counter > self.last):
            self._fanout.fail(LimitExceeded(
                f"postgres watcher fell behind: changes after revision {self.last} were pruned;"
                " read again and watch again"))
            log.warning("postgres watch feed at %s: changes after revision %d were pruned;"
                        " its watchers re-read, the feed goes on from %d",
                        self._target.address, self.last, counter)
            self.last = counter
            self._advanced.set()
            return True
        if not rows:
            return False
        self.last = rows[-1][0]
        self._fanout.emit(_change_event(row) for row in rows)
        self._advanced.set()
        return len(rows) == FEED_BATCH
