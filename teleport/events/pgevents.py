"""The `postgresql://` audit log: one table that every auth server of a cluster writes and searches.

`audit_events_uri: postgresql://user@host:5432/teleport_audit?sslmode=verify-full`, as current
Teleport takes it (`postgres://` too). Teleport's own options ride on the query and are taken off
before connecting: `retention_period` (a Go duration, default 8760h: one year), `cleanup_interval`
(default 1h) and `disable_cleanup`; everything else is the backend's conn_string.

Each event is stored as the JSON text the file log writes, so search hands back equal events with
their keys in the order they went in (jsonb would reorder them). Rows are keyed by (event time,
insertion sequence): search walks that one index in either order, a page's cursor is its last
row's key, and events of the same instant keep their emit order. Time, type and user filter in
SQL; free text is matched in Python over batches read in order, because it must be exactly the
file log's case folding of `event_text`, which no SQL collation promises. Emits that arrive while
a write is in flight are committed together by the next one (group commit), as the file log does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from teleport.backend.groupcommit import GroupCommitter
from teleport.backend.postgres_conn import (
    CONNECT_TIMEOUT,
    RETRYABLE,
    Target,
    map_error,
    open_pool,
    parse_conn_string,
)
from teleport.errors import BadParameter, ConnectionProblem, TeleportError
from teleport.events.search import EventPage, EventQuery, event_time
from teleport.utils.clock import Clock, RealClock
from teleport.utils.duration import format_duration, parse_duration

T = TypeVar("T")

log = logging.getLogger("teleport.audit")

SCHEMES = ("postgresql", "postgres")
#: Teleport's default retention, as the manual's one-year TTL of audit events.
DEFAULT_RETENTION = timedelta(hours=8760)
DEFAULT_CLEANUP_INTERVAL = timedelta(hours=1)
#: Seconds a call keeps retrying a lost connection before it raises ConnectionProblem.
RETRY_SECONDS = 5.0
#: Emits committed together at most.
MAX_GROUP = 256
#: Rows read per query while free text is matched in Python.
TEXT_BATCH = 1000
#: Rows one cleanup statement deletes: a short transaction, however much has expired.
CLEANUP_BATCH = 10_000
TABLE = "audit_events"
#: pg_advisory_xact_lock key that serialises creating the table (not the backend's key).
_SCHEMA_LOCK = 0x7E1EA0D1
#: Teleport's own options on the URI.
_OPTIONS = ("retention_period", "cleanup_interval", "disable_cleanup")
#: Teleport's cloud IAM logins: refused by name rather than connecting without them.
_UNSUPPORTED = ("auth_mode", "azure_client_id", "gcp_connection_name", "gcp_ip_type")
_WHAT = "postgres audit log"
_SETTING = "audit_events_uri"
_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_CURSOR = re.compile(r"(-?\d{1,19})\.(\d{1,19})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " event_time timestamptz NOT NULL,"
    " seq bigint GENERATED ALWAYS AS IDENTITY,"
    " event_type text,"
    " username text,"
    " event_data text NOT NULL,"
    " PRIMARY KEY (event_time, seq))"
)
_INSERT = f"INSERT INTO {TABLE} (event_time, event_type, username, event_data) VALUES ($1, $2, $3, $4)"
_CLEANUP = (
    f"DELETE FROM {TABLE} WHERE (event_time, seq) IN (SELECT event_time, seq FROM {TABLE}"
    " WHERE event_time < $1 ORDER BY event_time, seq LIMIT $2 FOR UPDATE SKIP LOCKED)")


@dataclass(frozen=True)
class Options:
    """Teleport's own options on the URI, which the server never sees."""

    retention: timedelta = DEFAULT_RETENTION
    cleanup_interval: timedelta = DEFAULT_CLEANUP_INTERVAL
    cleanup: bool = True


def shown_uri(uri: str) -> str:
    """Return uri fit for a message: the password, in the user info or the query, masked."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return re.sub(r":[^:@/]*@", ":********@", uri)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":********"
    query = re.sub(r"(^|&)((?:ssl)?password=)[^&]*", r"\1\2********", parts.query)
    return urlunsplit((parts.scheme, userinfo + at + hosts, parts.path, query, parts.fragment))


def _go_bool(name: str, value: str) -> bool:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise BadParameter(f"{name} must be true or false, got {value!r}")


def _positive_duration(name: str, value: str) -> timedelta:
    try:
        duration = parse_duration(value)
    except BadParameter as err:
        raise BadParameter(f"{name}: {err}") from None
    if duration <= timedelta(0):
        raise BadParameter(f"{name} must be positive, got {value!r}")
    return duration


def parse_uri(uri: str) -> tuple[Target, Options]:
    """Split an audit_events_uri into where to connect and Teleport's own options."""
    shown = shown_uri(uri)
    try:
        parts = urlsplit(uri.strip())
        try:
            _ = parts.port
        except ValueError:
            raise BadParameter("the port must be a number") from None
        if parts.scheme not in SCHEMES:
            raise BadParameter("must start with postgresql:// or postgres://")
        if parts.fragment:
            raise BadParameter("has a #fragment; percent-encode a # in the password as %23")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {name: value for name, value in query if name in _OPTIONS or name in _UNSUPPORTED}
        for name in _UNSUPPORTED:
            if ours.get(name):
                raise BadParameter(f"{name} is not supported yet (password and client certificate"
                                   " logins are); remove it")
        options = Options()
        if "retention_period" in ours:
            options = replace(options, retention=_positive_duration(
                "retention_period", ours["retention_period"]))
        if "cleanup_interval" in ours:
            options = replace(options, cleanup_interval=_positive_duration(
                "cleanup_interval", ours["cleanup_interval"]))
        if "disable_cleanup" in ours:
            options = replace(options, cleanup=not _go_bool(
                "disable_cleanup", ours["disable_cleanup"]))
        kept = urlencode([(name, value) for name, value in query if name not in ours])
        target = parse_conn_string(urlunsplit((parts.scheme, parts.netloc, parts.path, kept, "")))
    except (BadParameter, ValueError) as err:
        problem = str(err).removeprefix("postgres conn_string: ")
        raise BadParameter(f"{_SETTING} {shown!r}: {problem}") from None
    return target, options


class _CommitUnknown(Exception):
    """The connection broke while COMMIT was in flight: the events may or may not be stored."""


class PostgresEvents:
    """An audit log in a PostgreSQL table shared by every auth server; open it with open()."""

    def __init__(self, target: Target, options: Options, pool: asyncpg.Pool,
                 clock: Clock | None = None) -> None:
        self.target = target
        self.options = options
        self.clock = clock or RealClock()
        self._pool = pool
        self._closed = False
        self._committer: GroupCommitter[tuple[Any, ...], None] = GroupCommitter(
            self._insert_group, name=f"postgres audit writer {target.address}",
            max_group=MAX_GROUP,
            closed=lambda: ConnectionProblem(f"{_WHAT} at {target.address} is closed"))
        self._cleaner: asyncio.Task[None] | None = None
        if options.cleanup:
            self._cleaner = asyncio.get_running_loop().create_task(
                self._clean_forever(), name=f"postgres audit cleanup {target.address}")

    @classmethod
    async def open(cls, uri: str, *, region: str | None = None,
                   clock: Clock | None = None) -> Self:
        """Connect, create the table if it is missing, and start the retention cleanup.

        region is for the cloud sinks' common signature; PostgreSQL has none.
        """
        target, options = parse_uri(uri)
        pool = await open_pool(target, what=_WHAT, setting=_SETTING)
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                await _create_table(conn)
        except BaseException as err:
            pool.terminate()
            if isinstance(err, Exception) and not isinstance(err, TeleportError):
                raise map_error(target, err, what=_WHAT, setting=_SETTING) from None
            raise
        return cls(target, options, pool, clock)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionProblem(f"{_WHAT} at {self.target.address} is closed")

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run fn on a pooled connection, retrying lost connections for RETRY_SECONDS (a restarted
        server leaves dead connections in the pool; the retry reconnects)."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.05
        while True:
            self._check_open()
            try:
                async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                    return await fn(conn)
            except TeleportError:
                raise
            except _CommitUnknown as err:
                cause = err.__cause__ or err
                raise ConnectionProblem(
                    f"{_WHAT} at {self.target.address} was lost while committing; the events"
                    f" may or may not be stored: {self.target.scrub(str(cause))}") from None
            except RETRYABLE as err:
                if self._closed or time.monotonic() + delay > deadline:
                    raise map_error(self.target, err, what=_WHAT, setting=_SETTING) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as err:
                raise map_error(self.target, err, what=_WHAT, setting=_SETTING) from None

    # --- emit -----------------------------------------------------------------------------------

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Store one event; return once it is committed, or raise ConnectionProblem."""
        self._check_open()
        data = dict(event)
        try:
            # As the file log writes it: ASCII only, so no lone surrogate or NUL reaches the server.
            text = json.dumps(data, separators=(",", ":"), default=str)
        except (TypeError, ValueError) as err:
            raise BadParameter(f"audit event cannot be written as JSON: {err}") from None
        row = (event_time(data) or self.clock.now(), _column(data.get("event")),
               _column(data.get("user")), text)
        await self._committer.submit(row)

    async def _insert_group(self, rows: list[tuple[Any, ...]]) -> list[None]:
        await self._run(functools.partial(_insert, rows=rows))
        return [None] * len(rows)

    # --- search ---------------------------------------------------------------------------------

    async def search(self, query: EventQuery) -> EventPage:
        """Return one page of matching events; next_key is "" once nothing more matches."""
        after = _parse_cursor(query.start_key)
        # Without free text every row SQL returns matches, so one more row tells whether a next
        # page exists; with it, batches are read until the page fills.
        batch = query.limit + 1 if not query.text else max(query.limit + 1, TEXT_BATCH)
        found: list[dict[str, Any]] = []
        last: tuple[datetime, int] | None = None
        while True:
            sql, args = _select(query, after, batch)
            rows = await self._run(functools.partial(_fetch, sql, args))
            for when, seq, text in rows:
                after = (when, seq)
                event = _decode(text, seq)
                if event is None or not query.matches(event):
                    continue
                if len(found) == query.limit:
                    assert last is not None
                    return EventPage(found, _cursor(last))
                found.append(event)
                last = after
            if len(rows) < batch:
                return EventPage(found, "")
            if len(found) == query.limit:
                assert last is not None
                return EventPage(found, _cursor(last))

    # --- retention ------------------------------------------------------------------------------

    async def cleanup(self) -> int:
        """Delete the events older than the retention period; return how many were deleted."""
        cutoff = self.clock.now() - self.options.retention
        total = 0
        while True:
            status = await self._run(lambda conn: conn.execute(_CLEANUP, cutoff, CLEANUP_BATCH))
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < CLEANUP_BATCH:
                return total

    async def _clean_forever(self) -> None:
        """Run cleanup at start and every cleanup_interval; a failure is logged, not fatal."""
        failing = False
        retention = format_duration(self.options.retention)
        while True:
            try:
                deleted = await self.cleanup()
            except TeleportError as err:
                if not failing:
                    log.warning("could not delete audit events older than %s: %s", retention, err)
                failing = True
            else:
                if failing:
                    log.info("%s at %s: deleting old events again", _WHAT, self.target.address)
                failing = False
                if deleted:
                    log.info("%s at %s: deleted %d events older than %s", _WHAT,
                             self.target.address, deleted, retention)
            await asyncio.sleep(self.options.cleanup_interval.total_seconds())

    async def close(self) -> None:
        """Stop the cleanup, let the group in flight commit (later ones are refused), disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.wait([self._cleaner])
        await self._committer.wait()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._pool.close()
        except Exception:
            self._pool.terminate()


# --- helpers ------------------------------------------------------------------------------------


async def _create_table(conn: asyncpg.Connection) -> None:
    """Create the table if it is missing; auth servers starting together take turns (a lock).

    An existing table is left alone without DDL, so a database administrator may create it and
    grant only INSERT, SELECT and DELETE.
    """
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(_CREATE)


async def _insert(conn: asyncpg.Connection, *, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows in order in one transaction. BEGIN and COMMIT are separate round trips so a
    connection lost before COMMIT is retried safely, and one lost during COMMIT is not retried."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.executemany(_INSERT, rows)
    except BaseException:
        if not conn.is_closed():
            await tx.rollback()
        raise
    try:
        await tx.commit()
    except Exception as err:
        raise _CommitUnknown() from err


def _column(value: object) -> str | None:
    """Return value if a text column can hold it (a str without NUL or lone surrogates)."""
    if not isinstance(value, str) or "\x00" in value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


def _select(query: EventQuery, after: tuple[datetime, int] | None,
            limit: int) -> tuple[str, list[Any]]:
    """Build the SQL for the next rows of query after the key `after`, in the query's order."""
    args: list[Any] = [query.since, query.until]
    where = ["event_time >= $1", "event_time <= $2"]
    if after is not None:
        args += after
        where.append(f"(event_time, seq) {'<' if query.newest_first else '>'}"
                     f" (${len(args) - 1}, ${len(args)})")
    # A type or user that no column can hold is left to query.matches: rows store NULL for them.
    types = [_column(t) for t in sorted(query.types)]
    if types and None not in types:
        args.append(types)
        where.append(f"event_type = ANY(${len(args)}::text[])")
    if query.user and _column(query.user) is not None:
        args.append(query.user)
        where.append(f"username = ${len(args)}")
    args.append(limit)
    order = "DESC" if query.newest_first else "ASC"
    return (f"SELECT event_time, seq, event_data FROM {TABLE} WHERE {' AND '.join(where)}"
            f" ORDER BY event_time {order}, seq {order} LIMIT ${len(args)}", args)


async def _fetch(sql: str, args: list[Any], conn: asyncpg.Connection) -> list[Any]:
    return list(await conn.fetch(sql, *args))


def _decode(text: str, seq: int) -> dict[str, Any] | None:
    try:
        event = json.loads(text)
    except ValueError:
        log.warning("skipping a corrupt audit event in %s (seq %d)", TABLE, seq)
        return None
    return event if isinstance(event, dict) else None


def _cursor(key: tuple[datetime, int]) -> str:
    when, seq = key
    raw = f"{(when - _EPOCH) // _MICROSECOND}.{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(key: str) -> tuple[datetime, int] | None:
    if not key:
        return None
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), altchars=b"-_", validate=True)
        m = _CURSOR.fullmatch(raw.decode())
        if m is None or int(m.group(2)) >= 2**63:
            raise ValueError(key)
        return _EPOCH + int(m.group(1)) * _MICROSECOND, int(m.group(2))
    except (binascii.Error, ValueError, OverflowError):
        raise BadParameter(f"invalid start key {key[:64]!r}") from None
