"""The PostgreSQL audit log against a real private server: the conformance checks every searchable
log passes, plus what only a shared networked database can get wrong (reopening, racing to create
the table, an outage, retention, bad URIs)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest

from teleport.errors import BadParameter, ConnectionProblem
from teleport.events import emitter as ev
from teleport.events import pgevents
from teleport.events.pgevents import (
    DEFAULT_CLEANUP_INTERVAL,
    DEFAULT_RETENTION,
    TABLE,
    PostgresEvents,
    parse_uri,
)
from teleport.utils.clock import FakeClock
from tests.audit_conformance import START, AuditLogConformance, OpenLog, fill, q
from tests.postgres_server import USER, PostgresServer


@pytest.fixture(scope="session")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def dsn(server: PostgresServer) -> str:
    """A fresh empty database per test, so tests never see each other's events."""
    return server.dsn(server.create_database())


@pytest.fixture
async def opened() -> AsyncIterator[list[PostgresEvents]]:
    logs: list[PostgresEvents] = []
    yield logs
    for log in logs:
        await log.close()


class TestPostgresEvents(AuditLogConformance):
    @pytest.fixture
    def open_log(self, dsn: str, opened: list[PostgresEvents]) -> OpenLog:
        async def open_() -> PostgresEvents:
            # The checks' events are from 2017: the default one-year retention would delete them.
            log = await PostgresEvents.open(dsn + "&disable_cleanup=true")
            opened.append(log)
            return log
        return open_


async def test_events_survive_reopening_and_are_shared(dsn: str) -> None:
    """Another auth server, or this one after a restart, searches what was written before."""
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as first:
        written = await fill(first, count=5)
        async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as second:
            assert (await second.search(q())).events == written
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as again:
        assert (await again.search(q())).events == written
        page = await again.search(q(limit=2, newest_first=True))
        assert page.events == written[:-3:-1] and page.next_key


async def test_stored_text_keeps_the_key_order(dsn: str) -> None:
    """The row holds the JSON the file log would write, byte for byte, not a reordered jsonb."""
    event = ev.make_event(ev.EXEC, FakeClock(START), user="joe", zebra=1, apple={"z": 1, "a": 2})
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as log:
        await log.emit(event)
    conn = await asyncpg.connect(dsn)
    try:
        stored = await conn.fetchval(f"SELECT event_data FROM {TABLE}")
    finally:
        await conn.close()
    assert stored == json.dumps(event, separators=(",", ":"))


async def test_odd_values_are_stored_and_found(dsn: str) -> None:
    """A NUL or a lone surrogate in a field cannot go into a text column; the event still does."""
    clock = FakeClock(START)
    odd = ev.make_event(ev.EXEC, clock, user="jo\x00e", command="a\ud800b")
    plain = ev.make_event(ev.EXEC, clock, user="joe")
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as log:
        await log.emit(odd)
        await log.emit(plain)
        assert (await log.search(q())).events == [odd, plain]
        assert (await log.search(q(user="jo\x00e"))).events == [odd]
        assert (await log.search(q(user="joe"))).events == [plain]


async def test_free_text_pages_read_past_many_misses(dsn: str) -> None:
    """Free text is matched in Python over batches; matches far apart still page in order."""
    clock = FakeClock(START)
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as log:
        wanted = []
        for i in range(2500):
            event = ev.make_event(ev.EXEC, clock, user="joe",
                                  command="needle" if i % 600 == 0 else f"hay {i}")
            clock.advance(timedelta(seconds=1))
            await log.emit(event)
            if i % 600 == 0:
                wanted.append(event)
        first = await log.search(q(text="NEEDLE", limit=2))
        assert first.events == wanted[:2] and first.next_key
        rest = await log.search(q(text="NEEDLE", limit=10, start_key=first.next_key))
        assert rest.events == wanted[2:] and rest.next_key == ""


async def test_concurrent_emits_are_all_stored_in_order(dsn: str) -> None:
    """Emits from many tasks at once go in groups; every one is stored, each task's in order."""
    clock = FakeClock(START)
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as log:
        events = [ev.make_event(ev.EXEC, clock, user="joe", command=str(i)) for i in range(600)]
        await asyncio.gather(*(log.emit(e) for e in events))
        found = (await log.search(q(limit=1000))).events
    assert found == events


async def test_concurrent_first_opens_create_the_table_once(dsn: str) -> None:
    """Auth servers starting together on an empty database: one table, all of them work."""
    logs = await asyncio.gather(
        *(PostgresEvents.open(dsn + "&disable_cleanup=true") for _ in range(6)))
    try:
        for n, log in enumerate(logs):
            await log.emit(ev.make_event(ev.EXEC, FakeClock(START), user="joe", command=str(n)))
        found = (await logs[0].search(q())).events
        assert [e["command"] for e in found] == [str(n) for n in range(6)]
    finally:
        for log in logs:
            await log.close()


async def test_outage_is_one_line_without_the_password_then_recovers(
        server: PostgresServer, dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An emit while the server is down fails after a short retry; the same log works again once
    it is back (the retry replaces the pool's dead connections)."""
    monkeypatch.setattr(pgevents, "RETRY_SECONDS", 1.0)
    async with await PostgresEvents.open(dsn + "&disable_cleanup=true") as log:
        before = ev.make_event(ev.EXEC, FakeClock(START), user="joe", command="before")
        await log.emit(before)
        await asyncio.to_thread(server.stop)
        try:
            started = time.monotonic()
            with pytest.raises(ConnectionProblem) as caught:
                await log.emit(ev.make_event(ev.EXEC, FakeClock(START), user="joe"))
            assert time.monotonic() - started < 5
            message = str(caught.value)
            assert f"127.0.0.1:{server.port}" in message and "audit" in message
            assert "\n" not in message and server.password not in message
            with pytest.raises(ConnectionProblem):
                await log.search(q())
        finally:
            await asyncio.to_thread(server.start)
        after = ev.make_event(ev.EXEC, FakeClock(START + timedelta(minutes=1)), user="joe",
                              command="after")
        await log.emit(after)
        assert (await log.search(q())).events == [before, after]


async def test_unreachable_server_at_open_is_one_line(server: PostgresServer) -> None:
    from tests.ports import refused_port

    with refused_port() as port:
        with pytest.raises(ConnectionProblem) as caught:
            await PostgresEvents.open(f"postgresql://{USER}:hunter2@127.0.0.1:{port}/audit")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message
    assert "\n" not in message and "hunter2" not in message


async def test_missing_database_names_the_setting(server: PostgresServer) -> None:
    with pytest.raises(BadParameter, match="has no database 'nope'.*audit_events_uri"):
        await PostgresEvents.open(server.dsn("nope"))


@pytest.mark.parametrize(("option", "problem"), [
    ("retention=1h", 'unrecognized configuration parameter "retention"'),
    ("sslmode=sometimes", "sslmode"),
])
async def test_option_only_the_server_can_judge_is_bad_parameter_at_open(
        dsn: str, option: str, problem: str) -> None:
    """A typo in an option reaches the server as a setting; its refusal is a configuration error."""
    with pytest.raises(BadParameter) as caught:
        await PostgresEvents.open(f"{dsn}&{option}")
    message = str(caught.value)
    assert problem in message and "audit_events_uri" in message and "\n" not in message


async def test_retention_deletes_old_events(dsn: str) -> None:
    """The sink's own task deletes what is older than retention_period, every cleanup_interval."""
    old = ev.make_event(ev.EXEC, FakeClock(START), user="joe", command="old")
    async with await PostgresEvents.open(
            dsn + "&retention_period=1h&cleanup_interval=50ms") as log:
        await log.emit(old)
        recent = ev.make_event(ev.EXEC, None, user="joe", command="recent")  # stamped now
        await log.emit(recent)
        everything = q(since=START, until=START + timedelta(days=365 * 100))
        deadline = time.monotonic() + 10
        while (await log.search(everything)).events != [recent]:
            assert time.monotonic() < deadline, "the old event was never deleted"
            await asyncio.sleep(0.05)


async def test_cleanup_follows_the_clock_and_can_be_disabled(dsn: str) -> None:
    clock = FakeClock(START)
    async with await PostgresEvents.open(
            dsn + "&disable_cleanup=true&retention_period=2h", clock=clock) as log:
        for minutes in (0, 60, 120):
            await log.emit(ev.make_event(ev.EXEC, FakeClock(START + timedelta(minutes=minutes)),
                                         user="joe", command=str(minutes)))
        clock.advance(timedelta(hours=3))
        await asyncio.sleep(0.2)  # no task of its own: nothing has gone
        assert len((await log.search(q())).events) == 3
        assert await log.cleanup() == 1
        assert [e["command"] for e in (await log.search(q())).events] == ["60", "120"]


def test_uri_options_and_defaults() -> None:
    target, options = parse_uri(
        "postgres://teleport:s3cret@db.example.com:6432/audit?sslmode=verify-full"
        "&retention_period=720h&cleanup_interval=30m&disable_cleanup=false&pool_max_conns=3")
    assert target.dsn == "postgres://teleport:s3cret@db.example.com:6432/audit?sslmode=verify-full"
    assert (target.address, target.user, target.database, target.max_conns) == (
        "db.example.com:6432", "teleport", "audit", 3)
    assert (options.retention, options.cleanup_interval, options.cleanup) == (
        timedelta(hours=720), timedelta(minutes=30), True)
    _, defaults = parse_uri("postgresql://teleport@db/audit")
    assert (defaults.retention, defaults.cleanup_interval, defaults.cleanup) == (
        DEFAULT_RETENTION, DEFAULT_CLEANUP_INTERVAL, True)
    assert DEFAULT_RETENTION == timedelta(days=365)
    assert not parse_uri("postgresql://db/audit?disable_cleanup=1")[1].cleanup


@pytest.mark.parametrize(("uri", "problem"), [
    ("mysql://teleport:s3cret@db/audit", "must start with postgresql://"),
    ("postgresql://teleport:s3cret@db/audit?retention_period=forever", "retention_period"),
    ("postgresql://teleport:s3cret@db/audit?retention_period=0s", "retention_period must be"),
    ("postgresql://teleport:s3cret@db/audit?cleanup_interval=-1h", "cleanup_interval must be"),
    ("postgresql://teleport:s3cret@db/audit?disable_cleanup=yes", "disable_cleanup must be"),
    ("postgresql://teleport:s3cret@db/audit?auth_mode=azure", "auth_mode is not supported"),
    ("postgresql://teleport:s3cret@db/audit?gcp_connection_name=p:r:i", "gcp_connection_name"),
    ("postgresql://teleport:s3cret@db/audit?pool_min_conns=2", "pool_min_conns"),
    ("postgresql://teleport:s3cret@db:port/audit", "port"),
    ("postgresql://teleport:s3cret@db/audit#x", "fragment"),
    ("postgresql://teleport@db/audit?password=s3cret&retention_period=x", "retention_period"),
])
async def test_bad_uri_is_one_line_naming_it_without_the_password(uri: str, problem: str) -> None:
    with pytest.raises(BadParameter) as caught:
        await PostgresEvents.open(uri)
    message = str(caught.value)
    assert message.startswith("audit_events_uri '") and "@db" in message, message
    assert problem in message and "\n" not in message and "s3cret" not in message, message
