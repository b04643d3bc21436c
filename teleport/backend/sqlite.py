"""The embedded default backend: one sqlite file in WAL mode, driven from one worker thread.

Every statement runs on a single dedicated thread that owns the connection, so concurrent
coroutines are serialised in submission order and the loop never blocks on disk. Writes are
committed in groups (backend.groupcommit): those queued while a commit is on its way to disk
share the next transaction and its one fsync, each in a savepoint so that a refusal rolls back
alone; every transaction first purges expired items. The committer hands a group's events to
watchers before any of its writers resumes, so watchers in this process see events in commit
order. Writes from other processes sharing the file are not watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from teleport.backend.base import Backend, Event, EventType, Item, Watcher
from teleport.backend.fanout import RESUME_HISTORY, EventFanout, check_item, show_key
from teleport.backend.groupcommit import GroupCommitter
from teleport.backend.memtrim import LoadDropTrimmer, release_after_load
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

SCHEMA_VERSION = 1
#: Seconds of real time between sweeps that announce expiries when nothing else is written.
PURGE_INTERVAL = 1.0
#: Writes committed together at most: each writer waits for its whole group. Reads do not (they
#: have their own connection), and a bigger group shares its fsync and its dirty pages among
#: more heartbeats' keep-alives (one request per heartbeat, moving the record and its host
#: name claim).
MAX_GROUP = 2000
#: Seconds from the start of a commit before a group of only keep-alives starts: under load
#: they gather into one transaction per period instead of one each (a commit's fixed cost, its
#: fsync and its trip to the writer's thread, was a quarter of a keep-alive's CPU at 5,000
#: nodes), at the price of at most this much more latency for a beat; an idle store commits
#: one at once, and any other write starts the group early.
LEASE_PATIENCE = 0.02
#: Seconds of real time between looks at whether the writes dropped, to give the memory their
#: burst left free back to the OS (`memtrim`).
TRIM_PERIOD = 60.0
#: Keys a keep-alive statement moves at most. Each statement is sized to a power of two up to
#: this (`_padded_chunks`): sqlite compiles a statement per distinct text and the connection
#: keeps the last 128 compiled, about 300 bytes per key each, so a statement per group size
#: kept up to 128 programs of up to thousands of keys (38 MB for 117 sizes of up to 2,000)
#: long after a burst.
EXTEND_CHUNK = 256

_SCHEMA = (
    "CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, expires INTEGER,"
    " revision INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # Revisions come from a persistent counter so they never repeat, even after deletes or reopen.
    "INSERT INTO meta (name, value) VALUES ('revision', 0)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_COLUMNS = "key, value, expires, revision"
_REVISION = "SELECT value FROM meta WHERE name = 'revision'"
_BUMP = "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value"
_LIVE = "(expires IS NULL OR expires > ?)"



@dataclasses.dataclass(frozen=True)
class _Lease:
    """A keep-alive: move the expiry of one or more items (microseconds), one request however
    many keys (a host's record and its name claim). Consecutive ones in a group are one
    UPDATE of one step, without a savepoint or a RETURNING each (4,000 a second at 10,000
    nodes). Each sqlite step releases the GIL and takes it back, and taking it back from a busy
    event loop forces the loop to stop at its next check: per-row steps (a statement per
    keep-alive, or executemany) stalled the loop for a share of every heartbeat's work."""

    keys: tuple[bytes, ...]
    expires: int


#: One write: it runs in the group's transaction, appends its events and returns its result;
#: or a lease, which has no event and returns None.
Change = Callable[[list[Event]], Any] | _Lease

_WRITE_LATENCY = BACKEND_LATENCY.labels("write")
_READ_LATENCY = BACKEND_LATENCY.labels("read")
_SQLITE_COMMITS = BACKEND_COMMITS.labels("sqlite")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _to_us(when: datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + us * _MICROSECOND


def _row_item(row: tuple[Any, ...]) -> Item:
    key, value, expires, revision = row
    return Item(bytes(key), bytes(value), _from_us(expires), str(revision))


def _padded_chunks(items: list[T]) -> Iterator[list[T]]:
    """items in chunks of at most EXTEND_CHUNK, each padded to a power of two by repeating its
    last item: a handful of statement texts whatever the number of items (repeats match the
    same row, which an UPDATE counts and a SELECT ... IN returns once)."""
    for start in range(0, len(items), EXTEND_CHUNK):
        chunk = items[start:start + EXTEND_CHUNK]
        chunk += chunk[-1:] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
        yield chunk


@functools.cache
def _extend_sql(pairs: int) -> str:
    values = ",".join(["(?, ?)"] * pairs)
    return (f"UPDATE kv SET expires = v.column2 FROM (VALUES {values}) AS v"
            " WHERE kv.key = v.column1")


@functools.cache
def _present_sql(keys: int) -> str:
    return f"SELECT key FROM kv WHERE key IN ({','.join(['?'] * keys)})"


def _deleted(rows: list[tuple[Any, ...]]) -> list[Event]:
    # RETURNING yields rows in no promised order; watchers get deletes in key order.
    return [Event(EventType.DELETE, Item(k, b"")) for k in sorted(bytes(r[0]) for r in rows)]


def _map_error(path: Path, err: sqlite3.Error) -> TeleportError:
    """Name the file and say what to do, so no sqlite exception reaches a caller."""
    code = getattr(err, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return ConnectionProblem(
            f"sqlite database {path} is locked by another process or connection: {err}")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return BadParameter(f"sqlite database {path} is corrupt or not a database: {err}")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return BadParameter(
            f"cannot write sqlite database {path}: {err}; check the path and its permissions")
    if code == sqlite3.SQLITE_FULL:
        return LimitExceeded(f"sqlite database {path}: the disk is full")
    return ConnectionProblem(f"sqlite database {path}: {err}")


def _prepare_files(path: Path) -> None:
    """Create the folder 0700 and the file 0600 before sqlite does, since they hold CA keys."""
    folder = path.parent
    try:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # tighten a file that was created elsewhere
        finally:
            os.close(fd)
        # sqlite creates -wal and -shm with the database's mode; old ones may predate that.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}{suffix}", 0o600)
    except OSError as err:
        raise BadParameter(
            f"cannot use {path} for the sqlite backend: {err.strerror or err}") from err


def _connect(path: Path, lock_timeout: float) -> sqlite3.Connection:
    """Open the database durably (WAL, synchronous=FULL) and create or check its schema."""
    _prepare_files(path)
    try:
        conn = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)
    except sqlite3.Error as err:
        raise _map_error(path, err) from err
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
        if mode != "wal":
            raise BadParameter(f"sqlite database {path}: the filesystem does not allow WAL mode")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchall()[0][0]
        if version == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
        elif version != SCHEMA_VERSION:
            raise BadParameter(
                f"sqlite database {path} has schema version {version}, this teleport "
                f"understands {SCHEMA_VERSION}; use a matching teleport version")
        conn.execute("COMMIT")
    except sqlite3.Error as err:
        conn.close()
        raise _map_error(path, err) from err
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_reader(path: Path, lock_timeout: float) -> sqlite3.Connection:
    """A second connection to the database _connect opened, for reads only."""
    try:
        conn = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)
        conn.execute("PRAGMA query_only = 1")
    except sqlite3.Error as err:
        raise _map_error(path, err) from err
    return conn


class SqliteBackend(Backend):
    """Keep cluster state in one local sqlite file; open it with SqliteBackend.open()."""

    def __init__(self, path: Path, clock: Clock, conn: sqlite3.Connection,
                 executor: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop,
                 reader: sqlite3.Connection, reader_executor: ThreadPoolExecutor,
                 floor: int = 0) -> None:
        self.path = path
        self.clock = clock
        self._conn = conn
        self._executor = executor
        # Reads have their own connection and thread (WAL lets them run beside a commit): a
        # listing of 10,000 nodes no longer holds every heartbeat's commit behind it.
        self._reader = reader
        self._reader_executor = reader_executor
        self._loop = loop
        # Resuming covers only this process's writes since floor, the revision at open.
        self._fanout = EventFanout(history=RESUME_HISTORY, floor=floor)
        self.store_id = self._fanout.history_id
        self._closed = False
        #: Writes committed so far, and what decides from them when to trim memory.
        self._written = 0
        self.trimmer = LoadDropTrimmer()
        self._committer: GroupCommitter[Change, Any] = GroupCommitter(
            self._commit, name=f"sqlite writer {path}", max_group=MAX_GROUP,
            closed=lambda: ConnectionProblem(f"sqlite backend {path} is closed"),
            patience=LEASE_PATIENCE)
        self._purger = loop.create_task(self._purge_forever(), name=f"sqlite purge {path}")

    @classmethod
    async def open(cls, path: Path, clock: Clock | None = None, *,
                   lock_timeout: float = 10.0) -> SqliteBackend:
        """Open or create the database; wait up to lock_timeout seconds for other writers."""
        path = Path(path)
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-backend")
        reader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        conn: sqlite3.Connection | None = None
        try:
            conn = await loop.run_in_executor(executor, _connect, path, lock_timeout)
            floor = await loop.run_in_executor(
                executor, lambda: int(conn.execute(_REVISION).fetchone()[0]))
            reader = await loop.run_in_executor(reader_executor, _connect_reader, path,
                                                lock_timeout)
        except BaseException:
            if conn is not None:
                await loop.run_in_executor(executor, conn.close)
            executor.shutdown(wait=False)
            reader_executor.shutdown(wait=False)
            raise
        return cls(path, clock or RealClock(), conn, executor, loop, reader, reader_executor,
                   floor)

    # --- plumbing: everything below with a leading underscore runs on the worker thread -------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the writer's thread (where self._conn may be used)."""
        if self._closed:
            raise ConnectionProblem(f"sqlite backend {self.path} is closed")
        started = time.perf_counter()
        try:
            return await self._loop.run_in_executor(self._executor, self._call, fn, *args)
        finally:
            BACKEND_LATENCY.labels(fn.__name__.strip("_")).observe(time.perf_counter() - started)

    async def _read(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query on the reader's connection and thread; it sees every commit made."""
        if self._closed:
            raise ConnectionProblem(f"sqlite backend {self.path} is closed")
        started = time.perf_counter()
        try:
            return await self._loop.run_in_executor(
                self._reader_executor, self._call, self._query, sql, params)
        finally:
            _READ_LATENCY.observe(time.perf_counter() - started)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        # fetchall: a half-read cursor would pin a WAL snapshot and stall checkpoints.
        return self._reader.execute(sql, params).fetchall()

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as err:
            raise _map_error(self.path, err) from err

    def _now(self) -> int:
        return _to_us(self.clock.now())

    async def _write(self, change: Callable[[list[Event]], T] | _Lease) -> T:
        """Queue change for the next group commit; return once it is on disk (or refused)."""
        if self._closed:
            raise ConnectionProblem(f"sqlite backend {self.path} is closed")
        started = time.perf_counter()
        try:
            result: T = await self._committer.submit(change, patient=isinstance(change, _Lease))
            return result
        finally:
            _WRITE_LATENCY.observe(time.perf_counter() - started)

    async def _commit(self, changes: list[Change]) -> list[Any]:
        """Commit one group on the worker thread, then publish its events before any of its
        writers resumes (the committer settles them after this returns)."""
        events, outcomes = await self._loop.run_in_executor(
            self._executor, self._call, self._transact_batch, self._now(), changes)
        _SQLITE_COMMITS.inc()
        self._written += len(changes)
        if events:
            self._fanout.emit(events)
        return outcomes

    def _transact_batch(self, now: int, changes: list[Change]) -> tuple[list[Event], list[Any]]:
        """Purge expired items, then apply each change in a savepoint; commit once.

        Return the committed events in order, and per change its result or the error that
        refused it (rolled back alone). A database error fails the whole batch.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[Any] = []
        try:
            events = _deleted(conn.execute(
                "DELETE FROM kv WHERE expires <= ? RETURNING key", (now,)).fetchall())
            self._stamp(events, 0)
            leases: list[_Lease] = []
            for change in changes:
                if isinstance(change, _Lease):
                    leases.append(change)
                    continue
                if leases:  # the run of leases before this write, in order
                    outcomes += self._extend(leases)
                    leases = []
                mine: list[Event] = []
                conn.execute("SAVEPOINT one_write")
                try:
                    outcome = change(mine)
                except sqlite3.Error:
                    raise
                except Exception as err:
                    conn.execute("ROLLBACK TO one_write")
                    outcome, mine = err, []
                conn.execute("RELEASE one_write")
                self._stamp(mine, 0)
                events.extend(mine)
                outcomes.append(outcome)
            if leases:
                outcomes += self._extend(leases)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return events, outcomes

    def _stamp(self, events: list[Event], start: int) -> None:
        """Give the deletes from start on one new revision, so a watch can resume past them."""
        if any(not e.item.revision for e in events[start:]):
            revision = self._select(_BUMP)[0][0]
            events[start:] = [e if e.item.revision else
                              Event(e.type, dataclasses.replace(e.item, revision=str(revision)))
                              for e in events[start:]]

    def _select(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        # fetchall: a half-read cursor would pin a WAL snapshot and stall checkpoints.
        return self._conn.execute(sql, params).fetchall()

    def _exists(self, key: bytes) -> bool:
        return bool(self._select("SELECT 1 FROM kv WHERE key = ?", key))

    def _upsert(self, item: Item, events: list[Event]) -> Item:
        revision = self._select(_BUMP)[0][0]
        expires = None if item.expires is None else _to_us(item.expires)
        self._conn.execute(
            f"INSERT INTO kv ({_COLUMNS}) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, expires = excluded.expires, revision = excluded.revision",
            (item.key, item.value, expires, revision))
        stored = dataclasses.replace(item, expires=_from_us(expires), revision=str(revision))
        events.append(Event(EventType.PUT, stored))
        return stored

    def _create(self, item: Item, events: list[Event]) -> Item:
        if self._exists(item.key):
            raise AlreadyExists(f"key {show_key(item.key)} already exists")
        return self._upsert(item, events)

    def _update(self, item: Item, events: list[Event]) -> Item:
        if not self._exists(item.key):
            raise NotFound(f"key {show_key(item.key)} not found")
        return self._upsert(item, events)

    def _swap(self, expected: Item, replace: Item, events: list[Event]) -> Item:
        rows = self._select("SELECT value, revision FROM kv WHERE key = ?", expected.key)
        if not rows:
            raise NotFound(f"key {show_key(expected.key)} not found")
        value, revision = rows[0]
        if bytes(value) != expected.value or (
                expected.revision and expected.revision != str(revision)):
            raise CompareFailed(f"key {show_key(expected.key)} has changed")
        return self._upsert(replace, events)

    def _delete(self, key: bytes, events: list[Event]) -> None:
        rows = self._select("DELETE FROM kv WHERE key = ? RETURNING key", key)
        if not rows:
            raise NotFound(f"key {show_key(key)} not found")
        events.extend(_deleted(rows))

    def _delete_range(self, start: bytes, end: bytes, events: list[Event]) -> None:
        events.extend(_deleted(self._select(
            "DELETE FROM kv WHERE key >= ? AND key < ? RETURNING key", start, end)))

    def _extend(self, leases: list[_Lease]) -> list[NotFound | None]:
        """Move the expiry of each lease's items, up to EXTEND_CHUNK a statement; the value and
        revision stay and no event is sent, as in etcd. One outcome per lease: None, or NotFound
        for an item that is gone (found from the row counts: no RETURNING row to step through
        per lease)."""
        # A later one for a key wins.
        latest = {one: lease.expires for lease in leases for one in lease.keys}
        updated = sum(self._conn.execute(
            _extend_sql(len(chunk)), [part for pair in chunk for part in pair]).rowcount
            for chunk in _padded_chunks(list(latest.items())))
        missing: set[bytes] = set()
        if updated != len(latest):  # rare: find which (a row per step is fine here)
            found = {bytes(row[0]) for chunk in _padded_chunks(list(latest))
                     for row in self._select(_present_sql(len(chunk)), *chunk)}
            missing = set(latest) - found
        outcomes: list[NotFound | None] = []
        for lease in leases:
            gone = [one for one in lease.keys if one in missing]
            outcomes.append(NotFound(f"key {show_key(gone[0])} not found") if gone else None)
        return outcomes

    async def _purge_forever(self) -> None:
        """Announce expiries to watchers even when nothing else is being written; once the
        writes drop after a burst, give the memory it left free back to the OS."""
        trim_due = self._loop.time() + TRIM_PERIOD
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            self._fanout.prune()  # and forget old events kept for resuming watches
            if self._loop.time() >= trim_due:
                trim_due = self._loop.time() + TRIM_PERIOD
                if self.trimmer.due(self._written):
                    await self._release_page_caches()
                    await release_after_load()
            try:
                # An empty write: its transaction purges, and its events keep commit order.
                if await self._read("SELECT 1 FROM kv WHERE expires <= ? LIMIT 1",
                                    self._now()):
                    await self._write(lambda events: None)
            except TeleportError as err:
                log.warning("could not purge expired items: %s", err)

    async def _release_page_caches(self) -> None:
        """Let both connections drop the pages they cached (each up to sqlite's 2 MB): a
        burst fills them, and pages left cached then hold slabs of the heap the burst grew
        (2.2 MB more at +10 min after 10,000 nodes). Reads after this come from the OS's cache."""
        try:
            await self._run(self._release_writer_pages)
            await self._read("PRAGMA shrink_memory")
        except TeleportError as err:
            log.warning("could not release the sqlite page caches: %s", err)

    def _release_writer_pages(self) -> None:
        self._conn.execute("PRAGMA shrink_memory")

    # --- the Backend interface -----------------------------------------------------------------

    async def get(self, key: bytes) -> Item:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM kv WHERE key = ? AND {_LIVE}", key, self._now())
        if not rows:
            raise NotFound(f"key {show_key(key)} not found")
        return _row_item(rows[0])

    async def get_range(self, start: bytes, end: bytes, limit: int = 0) -> list[Item]:
        if limit < 0:
            raise BadParameter(f"range limit must not be negative, got {limit}")
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM kv WHERE key >= ? AND key < ? AND {_LIVE}"
            " ORDER BY key LIMIT ?",
            start, end, self._now(), limit or -1)
        return [_row_item(row) for row in rows]

    async def create(self, item: Item) -> Item:
        check_item(item)
        return await self._write(lambda events: self._create(item, events))

    async def put(self, item: Item) -> Item:
        check_item(item)
        return await self._write(lambda events: self._upsert(item, events))

    async def update(self, item: Item) -> Item:
        check_item(item)
        return await self._write(lambda events: self._update(item, events))

    async def compare_and_swap(self, expected: Item, replace: Item) -> Item:
        check_item(replace)
        if expected.key != replace.key:
            raise BadParameter(
                f"compare_and_swap keys differ: {show_key(expected.key)} and {show_key(replace.key)}")
        return await self._write(lambda events: self._swap(expected, replace, events))

    async def delete(self, key: bytes) -> None:
        await self._write(lambda events: self._delete(key, events))

    async def delete_range(self, start: bytes, end: bytes) -> None:
        await self._write(lambda events: self._delete_range(start, end, events))

    async def keep_alive(self, key: bytes, expires: datetime) -> None:
        await self.keep_alive_all([key], expires)

    async def keep_alive_all(self, keys: Sequence[bytes], expires: datetime) -> None:
        if not keys:
            return
        if expires.utcoffset() is None:
            raise BadParameter(f"expiry of {show_key(keys[0])} must be timezone-aware")
        await self._write(_Lease(tuple(keys), _to_us(expires)))

    async def watch(self, prefixes: Sequence[bytes], since: str | None = None) -> Watcher:
        if self._closed:
            raise ConnectionProblem(f"sqlite backend {self.path} is closed")
        return self._fanout.watch(prefixes, since)

    async def close(self) -> None:
        """Stop the sweeper, end watchers, then close the connection after queued statements."""
        if self._closed:
            return
        self._closed = True
        self._purger.cancel()
        await asyncio.wait([self._purger])
        await self._committer.wait()  # writes already queued commit before the connection goes
        self._fanout.close()
        try:
            await self._loop.run_in_executor(self._executor, self._call, self._conn.close)
            await self._loop.run_in_executor(self._reader_executor, self._call,
                                             self._reader.close)
        finally:
            # The workers are idle by now, so joining them does not block the loop.
            self._executor.shutdown(wait=True)
            self._reader_executor.shutdown(wait=True)
