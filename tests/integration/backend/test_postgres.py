"""The PostgreSQL backend against a real private server: the conformance suite, plus what only a
shared networked database can get wrong (restarts, other processes, pruned history, logins)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest

from teleport.backend.base import Event, EventType, Item, range_end
from teleport.backend.conformance import CHECKS, EXPIRY_EVENT_CHECKS, next_event, run_check
from teleport.backend.postgres import SCHEMA_VERSION, PostgresBackend
from teleport.errors import AccessDenied, BadParameter, ConnectionProblem, LimitExceeded
from teleport.utils.clock import FakeClock
from tests.ports import refused_port
from tests.postgres_server import USER, PostgresServer


@pytest.fixture(scope="session")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def dsn(server: PostgresServer) -> str:
    """A fresh empty database per test, so tests never see each other's keys."""
    return server.dsn(server.create_database())


async def _events(events: AsyncIterator[Event], count: int) -> list[tuple[EventType, bytes, bytes]]:
    got = [await next_event(events) for _ in range(count)]
    return [(e.type, e.item.key, e.item.value) for e in got]


@pytest.mark.parametrize("check", [*CHECKS, *EXPIRY_EVENT_CHECKS])
async def test_conformance(check: str, dsn: str) -> None:
    await run_check(check, lambda clock: PostgresBackend.open(dsn, clock))


async def test_two_backends_on_one_database_watch_each_other(dsn: str) -> None:
    """What lets several auth servers share a database: a write through one reaches the other."""
    async with await PostgresBackend.open(dsn) as one, await PostgresBackend.open(dsn) as two:
        async with await two.watch([b"/roles/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            stored = await one.put(Item(b"/roles/admin", b"v1"))
            await one.delete(b"/roles/admin")
            put = await next_event(events)
            assert (put.type, put.item) == (EventType.PUT, stored)
            assert (await next_event(events)).type is EventType.DELETE
        assert await two.get_range(b"/", range_end(b"/")) == []


async def test_databases_are_isolated(server: PostgresServer, dsn: str) -> None:
    """Two clusters on one server, one database each, never see each other's keys or events."""
    other = server.dsn(server.create_database())
    async with await PostgresBackend.open(dsn) as one, await PostgresBackend.open(other) as two:
        async with await two.watch([]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await one.put(Item(b"/a", b"one's"))
            await two.put(Item(b"/b", b"two's"))
            assert await _events(events, 1) == [(EventType.PUT, b"/b", b"two's")]
        assert [i.key for i in await two.get_range(b"/", range_end(b"/"))] == [b"/b"]
        assert [i.key for i in await one.get_range(b"/", range_end(b"/"))] == [b"/a"]


async def test_watch_resumes_across_a_server_restart(server: PostgresServer, dsn: str) -> None:
    """Events written before the stop, and right after the start, arrive once each, in order;
    an item that expired meanwhile is announced as a delete."""
    clock = FakeClock()
    async with await PostgresBackend.open(dsn) as watching, \
            await PostgresBackend.open(dsn, clock) as writing:
        async with await watching.watch([b"/r/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await writing.put(Item(b"/r/temp", b"t", clock.now() + timedelta(seconds=5)))
            for n in range(3):
                await writing.put(Item(b"/r/%d" % n, b"before"))
            await asyncio.to_thread(server.restart)
            clock.advance(timedelta(seconds=5))
            # The pool's connections died with the server: writes reconnect on their own.
            for n in range(3, 6):
                await writing.put(Item(b"/r/%d" % n, b"after"))
            await watching.put(Item(b"/r/6", b"own"))
            got = await _events(events, 9)
            assert got == [(EventType.PUT, b"/r/temp", b"t")] + [
                (EventType.PUT, b"/r/%d" % n, b"before") for n in range(3)] + [
                (EventType.DELETE, b"/r/temp", b"")] + [
                (EventType.PUT, b"/r/%d" % n, b"after") for n in range(3, 6)] + [
                (EventType.PUT, b"/r/6", b"own")]
            # Nothing is delivered twice: the next event is the next write.
            await writing.delete(b"/r/0")
            assert await _events(events, 1) == [(EventType.DELETE, b"/r/0", b"")]


async def test_pruned_history_ends_watchers_with_limit_exceeded(
        server: PostgresServer, dsn: str) -> None:
    """A watcher that lost changes it never saw must re-read, never skip them silently."""
    database = dsn.rsplit("/", 1)[1].split("?")[0]
    async with await PostgresBackend.open(dsn) as behind, \
            await PostgresBackend.open(dsn) as writing:
        watcher = await behind.watch([b"/p/"])
        events = aiter(watcher)
        assert (await next_event(events)).type is EventType.INIT
        # Cut the watching backend's feed off while its pool and the writer stay connected.
        server.sql(f"ALTER DATABASE {database} CONNECTION LIMIT 0")
        server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   f" WHERE datname = '{database}' AND application_name = 'teleport-watch'")
        for n in range(3):
            await writing.put(Item(b"/p/%d" % n, b"missed"))
        await writing.prune_changes(keep=timedelta(0))
        server.sql(f"ALTER DATABASE {database} CONNECTION LIMIT -1")
        with pytest.raises(LimitExceeded, match="fell behind"):
            await asyncio.wait_for(anext(events), 15)
        # Watching again starts from now and sees later writes.
        async with await behind.watch([b"/p/"]) as again:
            fresh = aiter(again)
            assert (await next_event(fresh)).type is EventType.INIT
            await writing.put(Item(b"/p/new", b"seen"))
            assert await _events(fresh, 1) == [(EventType.PUT, b"/p/new", b"seen")]
        assert len(await behind.get_range(b"/p/", range_end(b"/p/"))) == 4


async def test_unreachable_server_is_one_line_naming_the_address() -> None:
    with refused_port() as port:
        started = time.monotonic()
        with pytest.raises(ConnectionProblem) as caught:
            await PostgresBackend.open(f"postgresql://{USER}:hunter2@127.0.0.1:{port}/teleport")
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message
    assert "\n" not in message and "hunter2" not in message


async def test_wrong_password_is_access_denied_naming_the_user(
        server: PostgresServer, dsn: str) -> None:
    database = dsn.rsplit("/", 1)[1].split("?")[0]
    with pytest.raises(AccessDenied) as caught:
        await PostgresBackend.open(server.dsn(database, password="wrong-secret"))
    message = str(caught.value)
    assert repr(USER) in message and "wrong-secret" not in message and "\n" not in message


async def test_missing_database_is_one_clear_line(server: PostgresServer) -> None:
    with pytest.raises(BadParameter, match="has no database 'not_there'"):
        await PostgresBackend.open(server.dsn("not_there"))


async def test_concurrent_first_open_creates_the_schema_once(dsn: str) -> None:
    """Two auth servers starting on an empty database at once: one migration, both work."""
    backends = await asyncio.gather(*(PostgresBackend.open(dsn) for _ in range(4)))
    try:
        await backends[0].create(Item(b"/once", b"1"))
        assert (await backends[3].get(b"/once")).value == b"1"
        assert len({b.store_id for b in backends}) == 1  # one database, one history
    finally:
        for backend in backends:
            await backend.close()
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    finally:
        await conn.close()


async def test_newer_schema_is_refused(dsn: str) -> None:
    async with await PostgresBackend.open(dsn, FakeClock()):
        pass
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)",
                           SCHEMA_VERSION + 1)
    finally:
        await conn.close()
    with pytest.raises(BadParameter, match=f"schema version {SCHEMA_VERSION + 1}"):
        await PostgresBackend.open(dsn)


async def test_expiry_is_announced_without_writes(dsn: str) -> None:
    """The backend's sweep deletes what expired and tells watchers, though nobody writes."""
    clock = FakeClock()
    async with await PostgresBackend.open(dsn, clock) as backend:
        async with await backend.watch([b"/e/"]) as watcher:
            events = aiter(watcher)
            assert (await next_event(events)).type is EventType.INIT
            await backend.put(Item(b"/e/session", b"s", clock.now() + timedelta(seconds=30)))
            assert (await next_event(events)).type is EventType.PUT
            clock.advance(timedelta(seconds=30))
            assert await _events(events, 1) == [(EventType.DELETE, b"/e/session", b"")]


async def test_calls_during_an_outage_fail_in_seconds_then_recover(
        server: PostgresServer, dsn: str) -> None:
    """A lost server is a ConnectionProblem naming it after a brief retry, never a hang; the
    same backend works again once the server is back."""
    async with await PostgresBackend.open(dsn) as backend:
        await backend.put(Item(b"/o/a", b"1"))
        await asyncio.to_thread(server.stop)
        try:
            started = time.monotonic()
            with pytest.raises(ConnectionProblem, match=f"127.0.0.1:{server.port}"):
                await backend.get(b"/o/a")
            assert time.monotonic() - started < 10
        finally:
            await asyncio.to_thread(server.start)
        assert (await backend.get(b"/o/a")).value == b"1"
        await backend.put(Item(b"/o/b", b"2"))


async def test_resume_is_served_by_any_backend_on_the_database_until_pruned(dsn: str) -> None:
    """A revision from one auth server resumes at another on the same database; pruned: refused."""
    async with await PostgresBackend.open(dsn) as first, \
            await PostgresBackend.open(dsn) as second:
        seen = await first.put(Item(b"/a/1", b"seen"))
        await first.put(Item(b"/a/2", b"missed"))
        async with await second.watch([b"/a/"], since=seen.revision) as watcher:
            assert await _events(aiter(watcher), 2) == [
                (EventType.INIT, b"", b""), (EventType.PUT, b"/a/2", b"missed")]
        await first.prune_changes(keep=timedelta(0))
        with pytest.raises(LimitExceeded, match="pruned"):
            await second.watch([b"/a/"], since=seen.revision)
